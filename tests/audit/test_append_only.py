"""The database itself refuses to change or remove audit events, whatever the client."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from audit import triggers
from audit.models import AuditEvent, ChainHead
from audit.services import audit_record, audit_seal

pytestmark = pytest.mark.django_db

ACME = 101


def refused():
    """Expect the triggers' refusal.

    Each refused statement runs in its own savepoint (``transaction.atomic()``): on PostgreSQL a
    failed statement would otherwise abort the test's whole transaction.
    """
    return pytest.raises(DatabaseError, match="append-only")


@pytest.fixture
def event(record):
    return record(ACME, target="esc_1", data={"amount": 750})


def raw_sql(sql: str, params: list | None = None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)


def test_database_refuses_to_update_an_event_with_raw_sql(event):
    with refused():
        raw_sql("UPDATE audit_auditevent SET target = %s WHERE id = %s", ["esc_2", event.pk])

    assert AuditEvent.objects.get(pk=event.pk).target == "esc_1"


def test_database_refuses_to_delete_an_event_with_raw_sql(event):
    with refused():
        raw_sql("DELETE FROM audit_auditevent WHERE id = %s", [event.pk])
    with refused():
        raw_sql("DELETE FROM audit_auditevent")

    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_database_refuses_to_truncate_the_event_table(event):
    # SQLite has no TRUNCATE: its "DELETE FROM" without a WHERE is covered above.
    if connection.vendor == "postgresql":
        with refused():
            raw_sql("TRUNCATE audit_auditevent")

    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_orm_cannot_update_or_delete_an_event(event):
    event.data = {"amount": 1}
    with refused(), transaction.atomic():
        event.save()
    with refused(), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="escalation.deleted")
    with refused(), transaction.atomic():
        event.delete()
    with refused(), transaction.atomic():
        AuditEvent.objects.all().delete()

    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.action, stored.data) == ("escalation.created", {"amount": 750})


def test_only_the_sealing_of_an_unsealed_event_is_allowed(record):
    with transaction.atomic():
        unsealed = audit_record(
            organization_id=ACME, action="member.added", actor={"type": "system"}
        )
    # Sealing with anything else changed at the same time is refused...
    with refused():
        raw_sql(
            "UPDATE audit_auditevent SET seq = 1, prev_hash = %s, hash = %s, target = %s"
            " WHERE id = %s",
            ["0" * 64, "f" * 64, "esc_forged", unsealed.pk],
        )
    # ...and so is a half seal.
    with refused():
        raw_sql("UPDATE audit_auditevent SET seq = 1 WHERE id = %s", [unsealed.pk])

    assert audit_seal(organization_id=ACME) == 1
    sealed = AuditEvent.objects.get(pk=unsealed.pk)
    assert sealed.seq == 1

    # Once sealed, never again: not even a re-seal.
    with refused():
        raw_sql(
            "UPDATE audit_auditevent SET seq = 2, hash = %s WHERE id = %s", ["0" * 64, sealed.pk]
        )
    with refused():
        raw_sql(
            "UPDATE audit_auditevent SET seq = NULL, prev_hash = NULL, hash = NULL WHERE id = %s",
            [sealed.pk],
        )
    assert AuditEvent.objects.get(pk=sealed.pk).hash == sealed.hash


def test_chain_head_stays_writable(event):
    assert ChainHead.objects.filter(organization_id=ACME).update(seq=1) == 1


def test_triggers_install_and_uninstall_are_idempotent(event):
    triggers.install(connection)
    triggers.uninstall(connection)
    triggers.uninstall(connection)

    assert AuditEvent.objects.filter(pk=event.pk).update(target="esc_2") == 1

    triggers.install(connection)
    triggers.install(connection)
    with refused():
        raw_sql("UPDATE audit_auditevent SET target = %s WHERE id = %s", ["esc_3", event.pk])
