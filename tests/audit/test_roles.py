"""``manage.py audit_roles``: the application's database role can append audit events and
nothing more; only the owner role could touch the triggers."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from audit.models import AuditEvent, ChainHead
from tests.live import need_services

pytestmark = [pytest.mark.services, pytest.mark.django_db]

ACME = 101


@pytest.fixture
def roles(db) -> tuple[str, str]:
    """An owner and an app role, set up by the command. Roles are cluster-wide; the test's
    transaction rolls their creation back with everything else."""
    need_services()
    suffix = secrets.token_hex(4)
    owner, app = f"awaithuman_owner_{suffix}", f"awaithuman_app_{suffix}"
    call_command("audit_roles", "--owner", owner, "--app", app)
    return owner, app


@contextmanager
def as_role(role: str) -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute(f'SET ROLE "{role}"')
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")


def refused(sql: str, params: list | None = None) -> None:
    """Refused for want of a privilege (not by the triggers, which would say "append-only")."""
    with (
        pytest.raises(DatabaseError, match=r"permission denied|must be owner"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(sql, params)


def test_the_app_role_appends_events_but_cannot_change_or_remove_them(roles, record):
    _, app = roles
    with as_role(app):
        first = record(ACME, target="esc_1")
        second = record(ACME, target="esc_2")
        assert second.seq == first.seq + 1
        assert ChainHead.objects.get(organization_id=ACME).seq == second.seq
        refused("UPDATE audit_auditevent SET target = 'esc_9' WHERE id = %s", [first.pk])
        # The sealing columns are granted, but a sealed event is never sealed again.
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("UPDATE audit_auditevent SET seq = 99 WHERE id = %s", [first.pk])
        refused("DELETE FROM audit_auditevent WHERE id = %s", [first.pk])
        refused("TRUNCATE audit_auditevent")
        refused("DELETE FROM audit_chainhead")
        refused("ALTER TABLE audit_auditevent DISABLE TRIGGER ALL")
        refused("DROP TRIGGER audit_event_no_update_delete ON audit_auditevent")
        refused("DROP FUNCTION audit_event_refuse_change() CASCADE")
        refused("SET session_replication_role = replica")
        refused("CREATE TABLE shadow (id int)")
    assert AuditEvent.objects.filter(organization_id=ACME).count() == 2


def test_the_app_role_still_reads_and_writes_the_application_tables(roles, acme):
    _, app = roles
    with as_role(app), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE tenants_organization SET name = 'Acme Inc' WHERE slug = 'acme'")
        cursor.execute("DELETE FROM tenants_invitation")
        cursor.execute("SELECT count(*) FROM escalations_escalation")


def test_the_owner_role_owns_the_audit_table_and_its_trigger_function(roles):
    owner, _ = roles
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'audit_auditevent'")
        assert cursor.fetchone() == (owner,)
        cursor.execute(
            "SELECT pg_get_userbyid(proowner) FROM pg_proc"
            " WHERE proname = 'audit_event_refuse_change'"
        )
        assert cursor.fetchone() == (owner,)


def test_sql_only_prints_the_statements(db):
    need_services()
    out = StringIO()
    call_command("audit_roles", "--owner", "o_role", "--app", "a_role", "--sql", stdout=out)
    assert "REVOKE UPDATE, DELETE ON" in out.getvalue()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = 'a_role'")
        assert cursor.fetchone() is None


def test_one_role_for_both_is_refused(db):
    need_services()
    with pytest.raises(CommandError, match="two different roles"):
        call_command("audit_roles", "--owner", "same", "--app", "same")
