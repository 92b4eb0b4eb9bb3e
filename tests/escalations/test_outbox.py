"""The outbox: every state change owes its effects in its own transaction, and the dispatcher
hands them to each consumer in order, retrying a failing one without touching the others."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from escalations import hooks, outbox
from escalations.models import Escalation, OutboxEvent
from tests.conftest import Tenant, create_escalation


class Recorder:
    """A consumer that fails the first ``failures`` times it is called, then records events."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.seen: list[tuple[int, str]] = []

    def __call__(self, events: list[hooks.Event]) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise RuntimeError("the consumer's service is down")
        self.seen += [(event.escalation_id, event.event) for event in events]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    consumer = Recorder()
    hooks.register("test.recorder", consumer)
    yield consumer
    hooks._consumers.pop("test.recorder")


def _make_due() -> None:
    """Let the backoff of every failed row run out."""
    OutboxEvent.objects.update(available_at=timezone.now() - timedelta(seconds=1))


def test_a_create_owes_its_effects_in_its_own_transaction(acme: Tenant, recorder: Recorder) -> None:
    # No on-commit callbacks run here: only what the transaction itself wrote exists.
    escalation_id = create_escalation(acme)["id"]
    pk = Escalation.objects.get(public_id=escalation_id).pk
    consumers = set(OutboxEvent.objects.filter(escalation_id=pk).values_list("consumer", flat=True))
    assert {"test.recorder", "live.queue", "notifications.fanout"} <= consumers

    outbox.outbox_drain()

    assert recorder.seen == [(pk, "created")]
    assert not OutboxEvent.objects.exists()


def test_a_consumer_that_fails_once_still_gets_the_event_exactly_once(
    acme: Tenant, recorder: Recorder
) -> None:
    recorder.failures = 2  # the batch, then the same event alone
    pk = Escalation.objects.get(public_id=create_escalation(acme)["id"]).pk

    outbox.outbox_drain()
    row = OutboxEvent.objects.get(consumer="test.recorder")
    assert row.attempts == 1
    assert "the consumer's service is down" in row.last_error
    assert row.available_at > timezone.now()
    # The other consumers were not held back by the failing one.
    assert list(OutboxEvent.objects.values_list("consumer", flat=True)) == ["test.recorder"]

    outbox.outbox_drain()  # not due yet: nothing happens
    assert recorder.seen == []

    _make_due()
    outbox.outbox_drain()
    outbox.outbox_drain()
    assert recorder.seen == [(pk, "created")]
    assert not OutboxEvent.objects.exists()


def test_later_events_wait_behind_a_failing_earlier_one_of_the_same_escalation(
    acme: Tenant, recorder: Recorder
) -> None:
    recorder.failures = 2
    first = Escalation.objects.get(public_id=create_escalation(acme)["id"]).pk
    outbox.outbox_drain()
    cancelled = acme.agent_client().post(
        f"/api/v1/escalations/{create_escalation(acme)['id']}/cancel"
    )
    assert cancelled.status_code == 200
    second = Escalation.objects.get(public_id=cancelled.json()["id"]).pk
    other = acme.agent_client().post(
        f"/api/v1/escalations/{Escalation.objects.get(pk=first).public_id}/cancel"
    )
    assert other.status_code == 200

    outbox.outbox_drain()
    # The second escalation's events went through; the first's cancellation waits for its
    # creation, which is backing off.
    assert recorder.seen == [(second, "created"), (second, "cancelled")]

    _make_due()
    outbox.outbox_drain()
    assert recorder.seen[2:] == [(first, "created"), (first, "cancelled")]


def test_an_event_that_keeps_failing_is_parked_with_its_error(
    acme: Tenant, recorder: Recorder
) -> None:
    recorder.failures = 1000
    create_escalation(acme)
    for _ in range(outbox.MAX_ATTEMPTS):
        _make_due()
        outbox.outbox_drain()
    row = OutboxEvent.objects.get(consumer="test.recorder")
    assert row.parked_at is not None
    assert row.attempts == outbox.MAX_ATTEMPTS

    calls = recorder.calls
    _make_due()
    outbox.outbox_drain()
    assert recorder.calls == calls  # parked: not tried again on its own

    recorder.failures = 0
    assert outbox.outbox_retry(ids=[row.pk], actor={"type": "system"}) == 1
    outbox.outbox_drain()
    assert [event for _, event in recorder.seen] == ["created"]
    assert not OutboxEvent.objects.exists()


def test_a_row_for_a_consumer_no_process_knows_is_parked_not_dropped(acme: Tenant) -> None:
    pk = Escalation.objects.get(public_id=create_escalation(acme)["id"]).pk
    OutboxEvent.objects.create(escalation_id=pk, consumer="gone.consumer", event="created")
    outbox.outbox_drain()
    row = OutboxEvent.objects.get(consumer="gone.consumer")
    assert row.parked_at is not None
    assert "gone.consumer" in row.last_error


def test_nothing_is_owed_when_the_change_rolls_back(acme: Tenant, recorder: Recorder) -> Any:
    response = acme.agent_client().post("/api/v1/escalations", {"kind": "approval"}, format="json")
    assert response.status_code == 400
    assert not OutboxEvent.objects.exists()


def test_one_commit_asks_for_one_dispatch(acme: Tenant, django_capture_on_commit_callbacks: Any):
    with django_capture_on_commit_callbacks() as callbacks:
        create_escalation(acme)
    # The escalation's outbox rows and its audit event share one nudge.
    assert [callback for callback in callbacks if callback is outbox.outbox_nudge] == [
        outbox.outbox_nudge
    ]
