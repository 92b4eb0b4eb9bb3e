"""Fan-out: who is notified where when an escalation enters a level, exactly once."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from escalations import hooks
from escalations.deadlines import timers_due
from escalations.models import Escalation, Policy, PolicyLevel
from notifications import fanout, tasks
from notifications.contact_points import preference_set_all_points_for, preference_update
from notifications.fanout import deliveries_fan_out
from notifications.models import Delivery
from tests.conftest import create_escalation

from .conftest import add_point, deliveries, new_escalation


def _policy(acme: Any, *levels: dict[str, Any], **fields: Any) -> Policy:
    policy = Policy.objects.create(organization=acme.organization, name="Refunds", **fields)
    for position, spec in enumerate(levels, start=1):
        members = spec.pop("members", [])
        level = PolicyLevel.objects.create(policy=policy, position=position, **spec)
        level.members.set(members)
    return policy


def test_a_new_escalation_notifies_every_operator_once_at_their_account_email(
    acme: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)

    rows = deliveries(escalation["id"])
    assert sorted(row.membership.user.email for row in rows) == ["alice@acme.test", "bob@acme.test"]
    assert {(row.channel, row.status, row.kind, row.level) for row in rows} == {
        ("email", "sent", "level_entered", 1)
    }
    assert sorted(message.to[0] for message in mail.outbox) == ["alice@acme.test", "bob@acme.test"]
    actions = list(
        AuditEvent.objects.filter(target=escalation["id"]).values_list("action", flat=True)
    )
    assert actions.count("delivery.queued") == 1
    assert actions.count("delivery.sent") == 2


def test_a_repeated_hook_call_creates_nothing_more(
    acme: Any, django_capture_on_commit_callbacks: Any
) -> None:
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    row = Escalation.objects.get(public_id=escalation["id"])
    payload = {"generation": row.timer_generation}

    with django_capture_on_commit_callbacks(execute=True):
        fanout.deliveries_fan_out_many([hooks.Event(row.pk, "created", payload)])
        fanout.deliveries_fan_out_many([hooks.Event(row.pk, "created", payload)] * 2)

    assert len(deliveries(escalation["id"])) == 2
    assert len(mail.outbox) == 2


def test_a_batch_of_events_is_fanned_out_in_as_many_queries_as_one(
    acme: Any, django_capture_on_commit_callbacks: Any
) -> None:
    """A burst of creates reaches the consumer as one batch: its cost in queries must not grow
    with the batch, and every escalation still gets its own deliveries and audit event."""
    rows = []
    for n in range(12):
        with django_capture_on_commit_callbacks(execute=False):
            escalation = create_escalation(acme, title=f"Burst {n}")
        rows.append(Escalation.objects.get(public_id=escalation["id"]))
    events = [hooks.Event(row.pk, "created", {"generation": 0}) for row in rows]
    with django_capture_on_commit_callbacks(execute=True):
        fanout.deliveries_fan_out_many(events[:1])  # the first makes everyone's preferences

    with django_capture_on_commit_callbacks(execute=True), CaptureQueriesContext(connection) as one:
        fanout.deliveries_fan_out_many(events[1:2])
    with django_capture_on_commit_callbacks(execute=True), CaptureQueriesContext(connection) as ten:
        fanout.deliveries_fan_out_many(events[2:])

    assert len(ten.captured_queries) == len(one.captured_queries) <= 8
    for row in rows:
        assert len(deliveries(row.public_id)) == 2, row.title
    queued = AuditEvent.objects.filter(action="delivery.queued")
    assert sorted(queued.values_list("target", flat=True)) == sorted(r.public_id for r in rows)
    assert len(mail.outbox) == 2 * 12


def test_viewers_are_never_notified(acme: Any, django_capture_on_commit_callbacks: Any) -> None:
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    assert acme.members["vera"].pk not in {
        row.membership_id for row in deliveries(escalation["id"])
    }


def test_a_level_notifies_its_targets_on_its_channels_and_the_next_level_escalates(
    acme: Any, fake_sms: Any, django_capture_on_commit_callbacks: Any
) -> None:
    bob, alice = acme.members["bob"], acme.members["alice"]
    add_point(bob, "sms", "+15550000001", position=5)  # after his e-mail, but the level wants sms
    _policy(
        acme,
        {"members": [bob], "channels": ["sms"], "wait_seconds": 60},
        {"roles": ["owner"], "channels": [], "wait_seconds": 60},
    )
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)

    first = deliveries(escalation["id"])
    assert [(row.membership_id, row.channel, row.kind) for row in first] == [
        (bob.pk, "sms", "level_entered")
    ]
    assert fake_sms.sent == ["+15550000001"]
    assert mail.outbox == []

    with django_capture_on_commit_callbacks(execute=True):
        timers_due(timezone.now() + timedelta(seconds=61))

    second = deliveries(escalation["id"])[1:]
    assert [(row.membership_id, row.channel, row.kind, row.level) for row in second] == [
        (alice.pk, "email", "escalated", 2)
    ]
    assert [message.to for message in mail.outbox] == [["alice@acme.test"]]
    assert mail.outbox[0].subject.startswith("[AwaitHuman] Escalated: ")


def test_reminders_notify_the_level_again(
    acme: Any, django_capture_on_commit_callbacks: Any
) -> None:
    _policy(
        acme,
        {"members": [acme.members["bob"]], "wait_seconds": 3600, "reminder_seconds": 60},
    )
    escalation = new_escalation(django_capture_on_commit_callbacks, acme)
    for minutes in (1.1, 2.2):
        with django_capture_on_commit_callbacks(execute=True):
            timers_due(timezone.now() + timedelta(minutes=minutes))

    kinds = [row.kind for row in deliveries(escalation["id"])]
    assert kinds == ["level_entered", "reminder", "reminder"]
    assert [m.subject.split(":")[0] for m in mail.outbox][1:] == ["[AwaitHuman] Reminder"] * 2


def test_the_priority_rule_picks_the_contact_point_for_that_priority(
    acme: Any, fake_sms: Any, django_capture_on_commit_callbacks: Any
) -> None:
    bob = acme.members["bob"]
    add_point(bob, "sms", "+15550000001", position=0, priorities=["urgent"])
    _policy(acme, {"members": [bob]})

    preference_set_all_points_for(membership=bob, priorities=[])
    normal = new_escalation(django_capture_on_commit_callbacks, acme)
    urgent = new_escalation(django_capture_on_commit_callbacks, acme, priority="urgent")

    assert [row.channel for row in deliveries(normal["id"])] == ["email"]
    assert [row.channel for row in deliveries(urgent["id"])] == ["sms"]


def test_urgent_reaches_every_contact_point_at_once_by_default(
    acme: Any, fake_sms: Any, django_capture_on_commit_callbacks: Any
) -> None:
    bob = acme.members["bob"]
    add_point(bob, "sms", "+15550000001", position=0)
    _policy(acme, {"members": [bob]})

    normal = new_escalation(django_capture_on_commit_callbacks, acme)
    urgent = new_escalation(django_capture_on_commit_callbacks, acme, priority="urgent")

    assert [row.channel for row in deliveries(normal["id"])] == ["sms"]
    assert [(row.channel, row.rank) for row in deliveries(urgent["id"])] == [
        ("sms", 0),
        ("email", 1),
    ]
    assert fake_sms.sent == ["+15550000001", "+15550000001"]  # the normal one, the urgent one
    assert [message.to for message in mail.outbox] == [["bob@acme.test"]]
    row = Escalation.objects.get(public_id=urgent["id"])
    again = deliveries_fan_out(
        escalation_id=row.pk, event="level_entered", payload={"level": 1, "round": 0}
    )
    assert again == [], "a repeated event notifies nobody twice"


def test_quiet_hours_keep_only_email_unless_the_escalation_is_urgent(
    acme: Any, fake_sms: Any, django_capture_on_commit_callbacks: Any
) -> None:
    bob = acme.members["bob"]
    add_point(bob, "sms", "+15550000001", position=0)
    _policy(acme, {"members": [bob]})
    now = timezone.now()
    preference_update(
        membership=bob,
        quiet_start=time((now.hour - 1) % 24),
        quiet_end=time((now.hour + 2) % 24),
        time_zone="UTC",
    )

    normal = new_escalation(django_capture_on_commit_callbacks, acme)
    urgent = new_escalation(django_capture_on_commit_callbacks, acme, priority="urgent")

    assert [row.channel for row in deliveries(normal["id"])] == ["email"]
    assert [row.channel for row in deliveries(urgent["id"])] == ["sms", "email"]


def test_quiet_hours_wrap_midnight_in_the_persons_time_zone(acme: Any) -> None:
    preference = preference_update(
        membership=acme.members["bob"],
        quiet_start=time(22),
        quiet_end=time(7),
        time_zone="America/New_York",
    )
    utc = datetime(2026, 1, 15, tzinfo=UTC)
    assert preference.is_quiet(utc.replace(hour=4))  # 23:00 in New York
    assert preference.is_quiet(utc.replace(hour=11))  # 06:00
    assert not preference.is_quiet(utc.replace(hour=12))  # 07:00
    assert not preference.is_quiet(utc.replace(hour=20))  # 15:00


def test_unverified_and_failing_points_are_passed_over(
    acme: Any, fake_sms: Any, django_capture_on_commit_callbacks: Any
) -> None:
    bob = acme.members["bob"]
    add_point(bob, "sms", "+15550000001", position=0, verified=False)
    failing = add_point(bob, "sms", "+15550000002", position=0)
    failing.failing_since = timezone.now()
    failing.save()
    _policy(acme, {"members": [bob]})

    escalation = new_escalation(django_capture_on_commit_callbacks, acme)

    assert [row.channel for row in deliveries(escalation["id"])] == ["email"]
    assert fake_sms.sent == []


def test_a_stale_task_sends_nothing_once_the_escalation_is_decided(
    acme: Any, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        escalation = create_escalation(acme)
    row = Escalation.objects.get(public_id=escalation["id"])
    # The fan-out commits, but its send tasks are held back (as if still queued).
    with django_capture_on_commit_callbacks(execute=False):
        created = deliveries_fan_out(
            escalation_id=row.pk, event="created", payload={"generation": row.timer_generation}
        )
    assert len(created) == 2
    answer = acme.client_for("bob").post(
        f"/api/v1/escalations/{escalation['id']}/responses", {"outcome": "approve"}, format="json"
    )
    assert answer.status_code == 201, answer.content

    for delivery in created:
        tasks.deliver(delivery.pk)

    assert mail.outbox == []
    assert {row.status for row in Delivery.objects.all()} == {"skipped"}


def test_a_task_for_a_level_already_left_sends_nothing(
    acme: Any, django_capture_on_commit_callbacks: Any
) -> None:
    _policy(
        acme,
        {"members": [acme.members["bob"]], "wait_seconds": 60},
        {"roles": ["owner"], "wait_seconds": 60},
    )
    with django_capture_on_commit_callbacks(execute=False):
        escalation = create_escalation(acme)
    row = Escalation.objects.get(public_id=escalation["id"])
    with django_capture_on_commit_callbacks(execute=False):
        (level_one,) = deliveries_fan_out(
            escalation_id=row.pk,
            event="level_entered",
            payload={"generation": row.timer_generation, "level": 1, "round": 0},
        )
    with django_capture_on_commit_callbacks(execute=False):
        timers_due(timezone.now() + timedelta(seconds=61))

    tasks.deliver(level_one.pk)

    level_one.refresh_from_db()
    assert level_one.status == "skipped"
    assert mail.outbox == []


def test_a_late_hook_for_a_level_already_left_notifies_nobody(
    acme: Any, django_capture_on_commit_callbacks: Any
) -> None:
    _policy(
        acme,
        {"members": [acme.members["bob"]], "wait_seconds": 60},
        {"roles": ["owner"], "wait_seconds": 60},
    )
    with django_capture_on_commit_callbacks(execute=False):
        escalation = create_escalation(acme)
        row = Escalation.objects.get(public_id=escalation["id"])
        timers_due(timezone.now() + timedelta(seconds=61))

    created = deliveries_fan_out(
        escalation_id=row.pk,
        event="level_entered",
        payload={"generation": 1, "level": 1, "round": 0},
    )
    assert created == []
