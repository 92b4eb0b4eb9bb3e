"""Sending a delivery: claim, retry with backoff, permanent failure falls through at once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.utils import timezone

from audit.models import AuditEvent
from escalations.models import Escalation
from notifications import contact_points, fanout, tasks
from notifications.deliveries import deliveries_due, delivery_claim, retry_delay
from notifications.models import Delivery
from notifications.transports import TransportError
from tests.conftest import create_escalation

from .conftest import add_point, deliveries, new_escalation


@pytest.fixture
def bob_sms_first(acme: Any, fake_sms: Any) -> Any:
    """Bob is reached by SMS first, then e-mail; alice has no contact points left."""
    add_point(acme.members["bob"], "sms", "+15550000001", position=0)
    contact_points.preference_get(acme.members["alice"]).membership.contact_points.all().delete()
    return acme.members["bob"]


def test_a_permanent_failure_falls_through_to_the_next_contact_point_at_once(
    acme: Any, fake_sms: Any, bob_sms_first: Any, django_capture_on_commit_callbacks: Any
) -> None:
    fake_sms.failures = [TransportError("21211 invalid 'To' number", permanent=True)]

    escalation = new_escalation(django_capture_on_commit_callbacks, acme)

    sms, fallback = deliveries(escalation["id"])
    assert (sms.channel, sms.status, sms.attempts) == ("sms", "failed", 1)
    assert "invalid" in sms.last_error
    assert (fallback.channel, fallback.status, fallback.fallback_of_id) == ("email", "sent", sms.pk)
    assert [m.to for m in mail.outbox] == [["bob@acme.test"]]
    sms.contact_point.refresh_from_db()
    assert sms.contact_point.failing_since is not None
    failed = AuditEvent.objects.get(target=escalation["id"], action="delivery.failed")
    assert failed.data["permanent"] is True
    assert failed.data["channel"] == "sms"


def test_a_transient_failure_is_retried_later_and_then_sent(
    acme: Any, fake_sms: Any, bob_sms_first: Any, django_capture_on_commit_callbacks: Any
) -> None:
    fake_sms.failures = [TransportError("503 from provider")]

    escalation = new_escalation(django_capture_on_commit_callbacks, acme)

    (sms,) = deliveries(escalation["id"])
    assert (sms.status, sms.attempts) == ("pending", 1)
    assert sms.next_attempt_at > timezone.now()
    assert fake_sms.sent == []
    # Not due yet: neither the sweep nor a stray task touches it.
    assert deliveries_due() == []
    assert tasks.deliver(sms.pk) == "not claimed"

    later = sms.next_attempt_at + timedelta(seconds=1)
    assert deliveries_due(now=later) == [sms.pk]
    Delivery.objects.filter(pk=sms.pk).update(next_attempt_at=timezone.now())
    assert tasks.deliver(sms.pk) == "sent"

    sms.refresh_from_db()
    assert (sms.status, sms.attempts, sms.provider_id) == ("sent", 2, "fake-1")
    assert fake_sms.sent == ["+15550000001"]
    actions = list(
        AuditEvent.objects.filter(target=escalation["id"])
        .filter(action__startswith="delivery.")
        .values_list("action", flat=True)
    )
    assert actions == ["delivery.queued", "delivery.attempt_failed", "delivery.sent"]


def test_transient_failures_give_up_after_the_last_attempt_and_fall_through(
    acme: Any,
    fake_sms: Any,
    bob_sms_first: Any,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.NOTIFICATION_DELIVERY_MAX_ATTEMPTS = 3
    fake_sms.failures = [TransportError("timeout")] * 3

    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    (sms,) = deliveries(escalation["id"])
    for _ in range(2):
        Delivery.objects.filter(pk=sms.pk).update(next_attempt_at=timezone.now())
        with django_capture_on_commit_callbacks(execute=True):
            tasks.deliver(sms.pk)

    sms, fallback = deliveries(escalation["id"])
    assert (sms.status, sms.attempts) == ("failed", 3)
    assert (fallback.channel, fallback.status) == ("email", "sent")
    sms.contact_point.refresh_from_db()
    assert sms.contact_point.failing_since is None  # not the address's fault


def test_backoff_grows_with_jitter_and_honours_retry_after(settings: Any) -> None:
    settings.NOTIFICATION_RETRY_BASE_SECONDS = 5
    for attempts, (low, high) in {1: (2.5, 5), 2: (5, 10), 4: (20, 40)}.items():
        delays = {retry_delay(attempts) for _ in range(20)}
        assert all(low <= delay <= high for delay in delays)
        assert len(delays) > 1
    assert retry_delay(1, retry_after=120) == 120


def test_a_delivery_is_claimed_once_and_reclaimable_only_after_its_lease(
    acme: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    delivery = deliveries(escalation["id"])[0]
    Delivery.objects.filter(pk=delivery.pk).update(status="pending", attempts=0)
    now = timezone.now()

    assert delivery_claim(delivery.pk, now=now)
    assert not delivery_claim(delivery.pk, now=now)
    lease = timedelta(seconds=settings.NOTIFICATION_DELIVERY_LEASE_SECONDS)
    assert deliveries_due(now=now + lease - timedelta(seconds=1)) == []
    assert deliveries_due(now=now + lease + timedelta(seconds=1)) == [delivery.pk]
    assert delivery_claim(delivery.pk, now=now + lease + timedelta(seconds=1))
    delivery.refresh_from_db()
    assert delivery.attempts == 2


def test_a_task_whose_message_was_lost_is_found_by_the_sweep(
    acme: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        escalation = create_escalation(acme)
    row = Escalation.objects.get(public_id=escalation["id"])
    with django_capture_on_commit_callbacks(execute=False):  # the enqueue never happens
        created = fanout.deliveries_fan_out(escalation_id=row.pk, event="created", payload={})
    assert len(created) == 2
    mail.outbox.clear()
    assert deliveries_due() == []
    Delivery.objects.filter(escalation=row).update(created_at=timezone.now() - timedelta(hours=1))

    assert tasks.deliveries_due() == 2
    assert len(mail.outbox) == 2
    assert tasks.deliveries_due() == 0


def test_the_sweep_queues_a_waiting_delivery_again_once_per_grace_period(
    acme: Any, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """A task waiting in a long queue looks lost to the sweep: it gets one extra task per grace
    period, not one on every sweep."""
    with django_capture_on_commit_callbacks(execute=False):
        escalation = create_escalation(acme)
    row = Escalation.objects.get(public_id=escalation["id"])
    with django_capture_on_commit_callbacks(execute=False):
        created = fanout.deliveries_fan_out(escalation_id=row.pk, event="created", payload={})
    ids = sorted(d.pk for d in created)
    grace = timedelta(seconds=settings.NOTIFICATION_LOST_TASK_SECONDS)
    now = timezone.now() + grace + timedelta(seconds=1)

    assert sorted(deliveries_due(now=now)) == ids
    assert deliveries_due(now=now + timedelta(seconds=5)) == []
    assert sorted(deliveries_due(now=now + grace + timedelta(seconds=1))) == ids
    assert delivery_claim(ids[0], now=now), "the queued task still claims it"
