"""Parked effects in the console: an organization's admins see what stopped being retried, why,
and retry it; nobody else sees them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from audit.models import AuditEvent
from escalations import hooks, outbox
from escalations.models import OutboxEvent
from tests.conftest import Tenant, create_escalation
from tests.escalations.test_outbox import Recorder, _make_due


@pytest.fixture
def failing() -> Iterator[Recorder]:
    consumer = Recorder(failures=1000)
    hooks.register("test.recorder", consumer)
    yield consumer
    hooks._consumers.pop("test.recorder")


def _park(tenant: Tenant) -> OutboxEvent:
    create_escalation(tenant, title="Refund the double charge")
    for _ in range(outbox.MAX_ATTEMPTS):
        _make_due()
        outbox.outbox_drain()
    return OutboxEvent.objects.get(consumer="test.recorder", parked_at__isnull=False)


def _client(tenant: Tenant, person: str) -> Client:
    client = Client()
    client.force_login(tenant.members[person].user)
    return client


def test_an_owner_sees_a_parked_effect_with_its_error_and_retries_it(
    acme: Tenant, failing: Recorder
) -> None:
    row = _park(acme)
    alice = _client(acme, "alice")

    overview = alice.get("/org/overview/")
    assert b'data-testid="parked-effects"' in overview.content
    assert b"1 effect stopped being retried" in overview.content
    page = alice.get("/org/effects/")
    assert page.status_code == 200
    assert b"Refund the double charge" in page.content
    assert b"the consumer&#x27;s service is down" in page.content

    failing.failures = 0
    response = alice.post("/org/effects/", {"event": str(row.pk)})
    assert response.status_code == 302
    row.refresh_from_db()
    assert (row.parked_at, row.attempts) == (None, 0)
    retried = AuditEvent.objects.get(action="outbox.retried")
    assert retried.actor["email"] == "alice@acme.test"
    assert retried.data["events"] == [
        {"id": row.pk, "consumer": "test.recorder", "event": "created"}
    ]

    outbox.outbox_drain()
    assert failing.seen and not OutboxEvent.objects.filter(consumer="test.recorder").exists()


def test_operators_and_other_organizations_never_see_or_retry_it(
    acme: Tenant, globex: Tenant, failing: Recorder
) -> None:
    row = _park(acme)
    assert _client(acme, "bob").get("/org/effects/").status_code == 403
    assert (
        b"effect" not in _client(acme, "bob").get("/org/overview/").content.split(b"<h1>")[1][:300]
    )

    charlie = _client(globex, "charlie")
    assert b"Refund the double charge" not in charlie.get("/org/effects/").content
    charlie.post("/org/effects/", {"event": str(row.pk)})
    charlie.post("/org/effects/")
    row.refresh_from_db()
    assert row.parked_at is not None
    assert not AuditEvent.objects.filter(action="outbox.retried").exists()
