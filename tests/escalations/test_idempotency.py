"""``Idempotency-Key`` on create: retries are safe and never make two rows."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connections
from django.utils import timezone

from audit.models import AuditEvent
from escalations.idempotency import MAX_KEY_LENGTH, fingerprint
from escalations.models import Escalation, IdempotencyRecord
from tests.conftest import APPROVAL, Tenant, api_client

CREATE = "/api/v1/escalations"
PROBLEM = "application/problem+json"


def create(tenant: Tenant, key: str | None, body: Any = APPROVAL) -> Any:
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return tenant.agent_client().post(CREATE, body, format="json", **headers)


def escalations_created() -> int:
    return AuditEvent.objects.filter(action="escalation.created").count()


@pytest.mark.django_db
def test_a_retry_with_the_same_key_and_body_replays_the_first_response(acme):
    first = create(acme, "order-1042-refund")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    retry = create(acme, "order-1042-refund")
    assert retry.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert Escalation.objects.count() == 1
    assert escalations_created() == 1


@pytest.mark.django_db
def test_the_replay_is_the_original_response_even_after_the_escalation_moved_on(acme):
    first = create(acme, "k-1").json()
    acme.agent_client().post(f"/api/v1/escalations/{first['id']}/cancel")
    retry = create(acme, "k-1")
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.json()["status"] == "pending"
    assert retry.json() == first


@pytest.mark.django_db
def test_the_same_body_with_keys_in_another_order_is_the_same_request(acme):
    first = create(acme, "k-order").json()
    reordered = dict(reversed(list(APPROVAL.items())))
    retry = create(acme, "k-order", reordered)
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.json()["id"] == first["id"]


@pytest.mark.django_db
def test_the_same_key_with_another_body_is_422(acme):
    first = create(acme, "k-2")
    other = create(acme, "k-2", {**APPROVAL, "title": "Refund $75 instead"})
    assert other.status_code == 422
    assert other["Content-Type"] == PROBLEM
    assert "different request body" in other.json()["detail"]
    assert "Idempotent-Replayed" not in other
    assert list(Escalation.objects.values_list("public_id", flat=True)) == [first.json()["id"]]


@pytest.mark.django_db
def test_requests_without_a_key_are_never_deduplicated(acme):
    assert create(acme, None).status_code == 201
    assert create(acme, None).status_code == 201
    assert Escalation.objects.count() == 2
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_keys_are_scoped_to_the_organization(acme, globex):
    acme_escalation = create(acme, "shared-key").json()
    globex_response = create(globex, "shared-key")
    assert globex_response.status_code == 201
    assert "Idempotent-Replayed" not in globex_response
    globex_escalation = globex_response.json()
    assert globex_escalation["id"] != acme_escalation["id"]
    assert Escalation.objects.get(public_id=globex_escalation["id"]).organization == (
        globex.organization
    )
    # Each organization's retry replays its own escalation.
    assert create(acme, "shared-key").json()["id"] == acme_escalation["id"]
    assert create(globex, "shared-key").json()["id"] == globex_escalation["id"]


@pytest.mark.django_db
def test_a_request_that_fails_validation_does_not_burn_the_key(acme):
    bad = create(acme, "k-3", {**APPROVAL, "title": ""})
    assert bad.status_code == 400
    assert "title" in bad.json()["errors"]
    good = create(acme, "k-3")
    assert good.status_code == 201
    assert "Idempotent-Replayed" not in good
    assert Escalation.objects.count() == 1


@pytest.mark.django_db
def test_a_request_that_fails_after_the_key_was_reserved_releases_it(acme, monkeypatch):
    from escalations import services

    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(services, "escalation_create", broken)
    with pytest.raises(RuntimeError):
        create(acme, "k-crash")
    assert not IdempotencyRecord.objects.exists()
    monkeypatch.undo()
    assert create(acme, "k-crash").status_code == 201


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * (MAX_KEY_LENGTH + 1), "tab\there"])
def test_an_unusable_key_is_400_naming_the_header(acme, key):
    response = create(acme, key)
    assert response.status_code == 400
    assert response["Content-Type"] == PROBLEM
    assert "Idempotency-Key" in response.json()["errors"]
    assert not Escalation.objects.exists()
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_a_key_of_the_maximum_length_is_accepted(acme):
    key = "k" * MAX_KEY_LENGTH
    assert create(acme, key).status_code == 201
    assert create(acme, key)["Idempotent-Replayed"] == "true"


def in_flight(tenant: Tenant, key: str, *, age: timedelta) -> IdempotencyRecord:
    """A record as left by a request that reserved ``key`` ``age`` ago and has not finished."""
    return IdempotencyRecord.objects.create(
        organization=tenant.organization,
        key=key,
        fingerprint=fingerprint("POST", CREATE, APPROVAL),
        created_at=timezone.now() - age,
    )


@pytest.mark.django_db
def test_a_retry_while_the_first_request_is_in_flight_is_409(acme):
    in_flight(acme, "k-busy", age=timedelta(seconds=5))
    response = create(acme, "k-busy")
    assert response.status_code == 409
    assert response["Content-Type"] == PROBLEM
    assert response["Retry-After"] == "1"
    assert not Escalation.objects.exists()


@pytest.mark.django_db
def test_an_in_flight_record_older_than_a_minute_is_taken_over(acme):
    in_flight(acme, "k-stale", age=timedelta(seconds=61))
    response = create(acme, "k-stale")
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    record = IdempotencyRecord.objects.get(key="k-stale")
    assert record.response_status == 201
    assert response.json()["id"] in record.response_body
    assert create(acme, "k-stale")["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
def test_a_key_older_than_a_day_can_be_used_again(acme):
    first = create(acme, "k-old").json()
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))
    again = create(acme, "k-old", {**APPROVAL, "title": "A new request, a day later"})
    assert again.status_code == 201
    assert again.json()["id"] != first["id"]


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_creates_with_one_key_make_exactly_one_row(acme):
    barrier = threading.Barrier(20)
    results: list[tuple[int, str | None, str | None]] = []
    errors: list[BaseException] = []

    def post() -> None:
        client = api_client(acme.agent_key)
        try:
            barrier.wait(timeout=10)
            response = client.post(CREATE, APPROVAL, format="json", HTTP_IDEMPOTENCY_KEY="burst")
            body_id = response.json().get("id") if response.status_code == 201 else None
            results.append((response.status_code, response.get("Idempotent-Replayed"), body_id))
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(results) == 20

    assert Escalation.objects.count() == 1
    escalation_id = Escalation.objects.get().public_id
    originals = [r for r in results if r[0] == 201 and r[1] is None]
    replays = [r for r in results if r[0] == 201 and r[1] == "true"]
    conflicts = [r for r in results if r[0] == 409]
    assert len(originals) == 1
    assert len(originals) + len(replays) + len(conflicts) == 20
    assert {r[2] for r in originals + replays} == {escalation_id}
    assert escalations_created() == 1
    assert IdempotencyRecord.objects.get().response_status == 201
