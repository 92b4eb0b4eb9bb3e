"""Notifying people: fan-out of an escalation event to deliveries, sending them, contact points.

Fan-out (``deliveries_fan_out_many``) turns each escalation event of a batch into one
``Delivery`` per target person — to their first usable contact point, or to every one for the
priorities their rule says (``NotificationPreference.all_points_for``) — in one transaction with
its audit event, and queues the send tasks after commit. The constraints on ``Delivery`` make a
repeated event (a retried hook, two tickers) create nothing twice.

Sending (``deliveries_send``: one event's deliveries together; ``delivery_send``: one) claims
the rows with a conditional UPDATE, checks that the escalation still waits at each delivery's
level, calls the channel's transport, and records the outcome: sent; a transient failure
retried later with backoff; or a permanent one, which marks the contact point failing and falls
through at once to the person's next contact point.
"""

from __future__ import annotations

import hmac
import json
import logging
import random
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F, Max, Q
from django.utils import timezone
from django.utils.crypto import salted_hmac

from audit.services import audit_batch, audit_record
from awaithuman import metrics
from awaithuman.celery import enqueue
from escalations import hooks
from escalations.models import Escalation
from tenants.billing import channel_refusal
from tenants.ids import new_public_id
from tenants.models import Membership
from tenants.services import SYSTEM_ACTOR

from .models import ContactPoint, Delivery, NotificationPreference
from .transports import TRANSPORTS, TransportError

logger = logging.getLogger(__name__)

# Escalation events that notify people, and the delivery kind each one makes.
NOTIFYING_EVENTS = {
    "created": "level_entered",  # only for escalations without policy levels (see below)
    "level_entered": "level_entered",
    "escalated": "escalated",
    "reminder": "reminder",
    "deadline_warning": "deadline_warning",
}
# Deliveries per send task, at most (an escalation's are never split).
SEND_TASK_DELIVERIES = 20
# Quiet hours keep these channels; everything else waits for an urgent escalation.
QUIET_CHANNELS = frozenset({"email"})

VERIFICATION_TTL = timedelta(minutes=15)
VERIFICATION_MAX_ATTEMPTS = 5
VERIFICATION_RESEND_AFTER = timedelta(seconds=60)
_VERIFICATION_SALT = "awaithuman.notifications.verification"


class ContactPointError(ValueError):
    """A contact point change that cannot be made; the message is shown to the person."""


# --- Who is notified, where -------------------------------------------------------------------


def preference_get(membership: Membership) -> NotificationPreference:
    """The person's notification preferences, created on first use.

    Creating them also makes the account's e-mail address the person's first contact point,
    verified — they signed in with it — so everyone is reachable from day one. It happens once:
    a person who removes every contact point afterwards is not notified (the console says so).
    """
    preference = NotificationPreference.objects.filter(membership=membership).first()
    if preference is not None:
        return preference
    with transaction.atomic():
        preference, created = NotificationPreference.objects.get_or_create(membership=membership)
        email = (membership.user.email or "").strip().lower()
        if created and email:
            point, added = ContactPoint.objects.get_or_create(
                membership=membership,
                channel="email",
                address=email,
                defaults={
                    "verified_at": timezone.now(),
                    "config": {"source": "account"},
                    "position": _next_position(membership),
                },
            )
            if added:
                audit_record(
                    organization_id=membership.organization_id,
                    action="contact_point.added",
                    actor=SYSTEM_ACTOR,
                    target=point.public_id,
                    data={"member": membership.public_id, "channel": "email", "source": "account"},
                )
    return preference


def _level_snapshot(escalation: Escalation, level: int) -> dict[str, Any] | None:
    levels = (escalation.policy_snapshot or {}).get("levels") or []
    return levels[level - 1] if 0 < level <= len(levels) else None


def targets_resolve(escalation: Escalation, targets: dict[str, Any] | None) -> list[Membership]:
    """The members a level reaches: its members, teams' members and roles — only those who can
    answer. ``all_operators``, no targets at all, or no level (``None``: the escalation has no
    policy levels) mean everyone who can answer: an escalation nobody hears about helps no one.
    """
    memberships = (
        escalation.organization.memberships.filter(
            role__in=Membership.ANSWERING_ROLES, user__is_active=True
        )
        .select_related("user")
        .order_by("created_at", "id")
    )
    targets = targets or {}
    roles, members, teams = (
        targets.get("roles") or [],
        targets.get("members") or [],
        targets.get("teams") or [],
    )
    if targets.get("all_operators") or not (roles or members or teams):
        return list(memberships)
    chosen = Q(role__in=roles) | Q(public_id__in=members) | Q(teams__public_id__in=teams)
    return list(memberships.filter(chosen).distinct())


def contact_points_usable(
    membership: Membership,
    *,
    channels: list[str],
    priority: str,
    now: datetime,
    preference: NotificationPreference | None = None,
) -> list[ContactPoint]:
    """The person's contact points, in their order, that may carry this notification.

    A point must be verified and not failing, on a channel the level allows (none listed: all)
    with a transport, serve the escalation's priority, and — in the person's quiet hours,
    unless the escalation is urgent — be e-mail.
    """
    return _usable(
        list(membership.contact_points.order_by("position", "id")),
        channels=channels,
        priority=priority,
        now=now,
        preference=preference or preference_get(membership),
    )


def _usable(
    points: list[ContactPoint],
    *,
    channels: list[str],
    priority: str,
    now: datetime,
    preference: NotificationPreference,
) -> list[ContactPoint]:
    quiet = priority != Escalation.Priority.URGENT and preference.is_quiet(now)
    return [
        point
        for point in points
        if point.is_usable
        and point.channel in TRANSPORTS
        and (not channels or point.channel in channels)
        and point.serves(priority)
        and (not quiet or point.channel in QUIET_CHANNELS)
    ]


# --- Fan-out ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Notice:
    """One event's fan-out, once checked to be current: who to reach, on which channels."""

    escalation: Escalation
    event: str
    kind: str
    level: int
    round: int
    generation: int
    channels: list[str]
    members: list[Membership]


def deliveries_fan_out(
    *, escalation_id: int, event: str, payload: dict[str, Any], now: datetime | None = None
) -> list[Delivery]:
    """Write the deliveries for one escalation event and queue their sends after commit.

    Returns the deliveries this call created (none for a repeated event, an event that notifies
    nobody, or a stale one: the escalation decided or moved on to another level meanwhile).
    """
    return deliveries_fan_out_many([hooks.Event(escalation_id, event, payload)], now=now)


def deliveries_fan_out_many(
    events: list[hooks.Event], *, now: datetime | None = None
) -> list[Delivery]:
    """``deliveries_fan_out`` for a batch of events, in a fixed number of queries.

    This is the outbox consumer ``notifications.fanout``: a burst of creates reaches it as one
    batch, and its escalations, each distinct target set's members, their preferences and their
    contact points are read once for the whole batch, the deliveries inserted in one statement
    and their audit events in another. Idempotent: a repeated event creates nothing (the
    constraints on ``Delivery``), so an event handled twice notifies nobody twice.
    """
    now = now or timezone.now()
    wanted = [event for event in events if event.event in NOTIFYING_EVENTS]
    if not wanted:
        return []
    with transaction.atomic():
        escalations = Escalation.objects.select_related("organization").in_bulk(
            {event.escalation_id for event in wanted}
        )
        members_of: dict[tuple[int, str], list[Membership]] = {}
        notices: list[_Notice] = []
        for event in wanted:
            escalation = escalations.get(event.escalation_id)
            notice = _notice(escalation, event, members_of) if escalation else None
            if notice is not None:
                notices.append(notice)
        people = {member.pk: member for notice in notices for member in notice.members}
        preferences = _preferences_of(list(people.values()))
        points_of: dict[int, list[ContactPoint]] = {pk: [] for pk in people}
        for point in ContactPoint.objects.filter(membership_id__in=people).order_by(
            "membership_id", "position", "id"
        ):
            points_of[point.membership_id].append(point)

        rows: list[Delivery] = []
        unreachable: dict[int, list[str]] = {}
        for index, notice in enumerate(notices):
            escalation = notice.escalation
            for member in notice.members:
                preference = preferences[member.pk]
                points = _usable(
                    points_of[member.pk],
                    channels=notice.channels,
                    priority=escalation.priority,
                    now=now,
                    preference=preference,
                )
                if not points:
                    unreachable.setdefault(index, []).append(member.public_id)
                    continue
                every_point = escalation.priority in (preference.all_points_for or [])
                rows.extend(
                    _new_delivery(
                        escalation,
                        membership=member,
                        contact_point=point,
                        kind=notice.kind,
                        level=notice.level,
                        round_=notice.round,
                        generation=notice.generation,
                        now=now,
                        rank=rank,
                    )
                    for rank, point in enumerate(points if every_point else points[:1])
                )
        created = _insert_new(rows)
        made: dict[tuple[int, str, int, int], list[Delivery]] = {}
        for row in created:
            made.setdefault((row.escalation_id, row.kind, row.level, row.round), []).append(row)
        with audit_batch():
            for index, notice in enumerate(notices):
                escalation = notice.escalation
                key = (escalation.pk, notice.kind, notice.level, notice.round)
                if made.get(key):
                    _fan_out_audited(notice, made.pop(key), unreachable.get(index, []))
                elif len(unreachable.get(index, [])) == len(notice.members) > 0:
                    logger.warning(
                        "escalation %s %s: nobody has a usable contact point",
                        escalation.public_id,
                        notice.event,
                    )
        if created:
            _enqueue_after_commit(created)
    return created


def _notice(
    escalation: Escalation,
    event: hooks.Event,
    members_of: dict[tuple[int, str], list[Membership]],
) -> _Notice | None:
    """What ``event`` asks of the fan-out, or None if nothing (any more): the escalation was
    decided or has left the event's level, or a level's own event follows for the same commit.
    ``members_of`` caches each organization's target sets across a batch."""
    if escalation.status != Escalation.Status.PENDING:
        return None
    has_levels = bool((escalation.policy_snapshot or {}).get("levels"))
    if event.event == "created" and has_levels:
        return None  # "level_entered" follows for the same commit
    payload = event.payload
    level = int(payload.get("level") or escalation.current_level)
    round_ = int(payload.get("round", escalation.current_round))
    if (level, round_) != (escalation.current_level, escalation.current_round):
        return None  # the escalation has left that level already
    snapshot = (_level_snapshot(escalation, level) if has_levels else None) or {}
    targets = snapshot.get("targets")
    key = (escalation.organization_id, json.dumps(targets, sort_keys=True))
    if key not in members_of:
        members_of[key] = targets_resolve(escalation, targets)
    return _Notice(
        escalation=escalation,
        event=event.event,
        kind=NOTIFYING_EVENTS[event.event],
        level=level,
        round=round_,
        generation=int(payload.get("generation", escalation.timer_generation)),
        channels=list(snapshot.get("channels") or []),
        members=members_of[key],
    )


def _preferences_of(members: list[Membership]) -> dict[int, NotificationPreference]:
    """Each member's preferences in one query; a member without any yet gets them made (and
    their account e-mail seeded as a contact point) by ``preference_get``."""
    found = {
        preference.membership_id: preference
        for preference in NotificationPreference.objects.filter(membership__in=members)
    }
    for member in members:
        if member.pk not in found:
            found[member.pk] = preference_get(member)
    return found


def _fan_out_audited(notice: _Notice, created: list[Delivery], unreachable: list[str]) -> None:
    audit_record(
        organization_id=notice.escalation.organization_id,
        action="delivery.queued",
        actor=SYSTEM_ACTOR,
        target=notice.escalation.public_id,
        data={
            "event": notice.event,
            "level": notice.level,
            "round": notice.round,
            "count": len(created),
            "deliveries": [
                {"id": row.public_id, "member": row.membership.public_id, "channel": row.channel}
                for row in created
            ],
            "unreachable": unreachable,
        },
    )


def _new_delivery(
    escalation: Escalation,
    *,
    membership: Membership,
    contact_point: ContactPoint,
    kind: str,
    level: int,
    round_: int,
    generation: int,
    now: datetime,
    fallback_of: Delivery | None = None,
    rank: int = 0,
) -> Delivery:
    delivery = Delivery(
        escalation=escalation,
        membership=membership,
        contact_point=contact_point,
        channel=contact_point.channel,
        kind=kind,
        level=level,
        round=round_,
        generation=generation,
        created_at=now,
        fallback_of=fallback_of,
        rank=rank,
    )
    # bulk_create does not call save(), which would set it.
    delivery.public_id = new_public_id("dlv")
    return delivery


def _insert_new(rows: list[Delivery]) -> list[Delivery]:
    """Insert ``rows``, skipping any that a unique constraint says exist; return those inserted.

    ``ignore_conflicts`` gives back no primary keys, so the inserted rows are read back by the
    public ids this call made: a concurrent duplicate that lost the race is simply absent.
    """
    if not rows:
        return []
    Delivery.objects.bulk_create(rows, ignore_conflicts=True)
    by_public_id = {row.public_id: row for row in rows}
    inserted = Delivery.objects.filter(public_id__in=list(by_public_id)).values_list(
        "public_id", "pk"
    )
    created = []
    for public_id, pk in inserted:
        row = by_public_id[public_id]
        row.pk = pk
        created.append(row)
    created.sort(key=lambda row: row.pk)
    return created


def _enqueue_after_commit(created: list[Delivery]) -> None:
    """After commit, queue the sends: an escalation's deliveries go out together, in tasks of
    about ``SEND_TASK_DELIVERIES`` — a burst of a thousand creates is a few dozen tasks to
    publish and run, not a thousand."""
    from .tasks import deliver_many

    calls: list[tuple[list[int]]] = []
    chunk: list[int] = []
    escalation_id = None
    for row in sorted(created, key=lambda row: (row.escalation_id, row.pk)):
        if len(chunk) >= SEND_TASK_DELIVERIES and row.escalation_id != escalation_id:
            calls.append((chunk,))
            chunk = []
        chunk.append(row.pk)
        escalation_id = row.escalation_id
    calls.append((chunk,))
    transaction.on_commit(lambda: enqueue(deliver_many, *calls))


# --- Sending ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryLater:
    """A transient failure: the delivery is pending again and due in ``delay`` seconds."""

    delay: float


def retry_delay(attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter (half to full of base × 2^(attempts-1)); a provider's
    ``Retry-After`` wins when it asks for longer."""
    base = settings.NOTIFICATION_RETRY_BASE_SECONDS * 2 ** max(attempts - 1, 0)
    delay = base * (0.5 + random.random() / 2)
    return max(delay, retry_after or 0.0)


def _claim(delivery_ids: list[int], *, now: datetime) -> datetime | None:
    """Take deliveries for sending: pending and due, or sending with an expired lease.

    The conditional UPDATE is the lock: of any number of tasks for one delivery (a Celery
    redelivery after a worker died, a retry and the sweep), exactly one gets it per lease.
    Returns the lease's end, which marks the rows this call took (None: it took none) — a row
    is claimed again only once that lease has passed, so no other claim carries the same end.
    """
    lease_end = now + timedelta(seconds=settings.NOTIFICATION_DELIVERY_LEASE_SECONDS)
    due = Q(status=Delivery.Status.PENDING) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + timedelta(seconds=1))
    )
    expired = Q(status=Delivery.Status.SENDING, claimed_until__lte=now)
    claimed = (
        Delivery.objects.filter(pk__in=delivery_ids)
        .filter(due | expired)
        .update(
            status=Delivery.Status.SENDING,
            attempts=F("attempts") + 1,
            claimed_until=lease_end,
            next_attempt_at=None,
        )
    )
    return lease_end if claimed else None


def delivery_claim(delivery_id: int, *, now: datetime) -> bool:
    """Take one delivery for sending (see ``_claim``)."""
    return _claim([delivery_id], now=now) is not None


def delivery_send(delivery_id: int) -> Delivery | RetryLater | None:
    """Send one delivery if it is this caller's to send; None when another worker has it."""
    return deliveries_send([delivery_id])[delivery_id]


def deliveries_send(delivery_ids: list[int]) -> dict[int, Delivery | RetryLater | None]:
    """Send the deliveries that are this caller's to send; each one's outcome by id (None when
    another worker has it or it is not due).

    A fan-out's deliveries travel in a few tasks (``tasks.deliver_many``): one claim and one
    load for all of a task's deliveries, then each provider call followed at once by its own short
    transaction that records the send with its audit event. A worker killed mid-batch has
    recorded every send that went out before the one in flight; only that one (its row still
    ``sending`` when its lease ends) is sent again by the sweep, with the same message identity
    (the e-mail's Message-ID, the callback's ``webhook-id``) so a receiver can drop the repeat.
    At least once; at most one repeat per killed worker.
    """
    outcomes: dict[int, Delivery | RetryLater | None] = dict.fromkeys(delivery_ids)
    lease_end = _claim(delivery_ids, now=timezone.now())
    if lease_end is None:
        return outcomes
    claimed = Delivery.objects.select_related(
        "escalation__agent",
        "escalation__organization",
        "contact_point__membership",
        "membership__user",
    ).filter(pk__in=delivery_ids, status=Delivery.Status.SENDING, claimed_until=lease_end)
    for delivery in claimed.order_by("pk"):
        escalation = delivery.escalation
        if escalation.status != Escalation.Status.PENDING or (delivery.level, delivery.round) != (
            escalation.current_level,
            escalation.current_round,
        ):
            outcomes[delivery.pk] = _delivery_skipped(delivery)
            continue
        transport = TRANSPORTS.get(delivery.channel)
        point = delivery.contact_point
        try:
            if transport is None:
                raise TransportError(f"no transport for {delivery.channel}", permanent=True)
            if point is None or not point.is_usable:
                raise TransportError("the contact point was removed or is failing", permanent=True)
            provider_id = transport().send(delivery) or ""
        except TransportError as exc:
            outcomes[delivery.pk] = _delivery_failed(delivery, exc)
        except Exception as exc:  # a bug or an unmapped library error: retry, do not lose it
            logger.exception("delivery %s: unexpected error from the transport", delivery.public_id)
            outcomes[delivery.pk] = _delivery_failed(
                delivery, TransportError(f"{type(exc).__name__}: {exc}"[:300])
            )
        else:
            outcomes[delivery.pk] = _delivery_sent(delivery, provider_id)
    return outcomes


def _mine(delivery: Delivery) -> Any:
    """The row as long as this worker's claim on it holds (same attempt, still sending)."""
    return Delivery.objects.filter(
        pk=delivery.pk, status=Delivery.Status.SENDING, attempts=delivery.attempts
    )


def _delivery_audit(delivery: Delivery, action: str, **data: Any) -> None:
    audit_record(
        organization_id=delivery.escalation.organization_id,
        action=action,
        actor=SYSTEM_ACTOR,
        target=delivery.escalation.public_id,
        data={
            "delivery": delivery.public_id,
            "member": delivery.membership.public_id if delivery.membership else None,
            "email": delivery.membership.user.email if delivery.membership else None,
            "channel": delivery.channel,
            "kind": delivery.kind,
            "level": delivery.level,
            "attempts": delivery.attempts,
            **data,
        },
    )


def _delivery_sent(delivery: Delivery, provider_id: str) -> Delivery:
    """Record one send (with the provider's message id) and its audit event, right after the
    provider accepted it."""
    now = timezone.now()
    with transaction.atomic():
        updated = _mine(delivery).update(
            status=Delivery.Status.SENT,
            provider_id=provider_id[:200],
            sent_at=now,
            claimed_until=None,
            last_error="",
        )
        if updated:
            metrics.delivery_result(channel=delivery.channel, result="sent")
            delivery.status, delivery.provider_id, delivery.sent_at = (
                Delivery.Status.SENT,
                provider_id,
                now,
            )
            _delivery_audit(delivery, "delivery.sent", provider_id=provider_id[:200])
    return delivery


def _delivery_skipped(delivery: Delivery) -> Delivery:
    # Not audited: nothing was sent and nothing about the escalation changed.
    _mine(delivery).update(status=Delivery.Status.SKIPPED, claimed_until=None)
    metrics.delivery_result(channel=delivery.channel, result="skipped")
    delivery.status = Delivery.Status.SKIPPED
    return delivery


def _delivery_failed(delivery: Delivery, error: TransportError) -> Delivery | RetryLater:
    now = timezone.now()
    message = (error.message or "failed")[:500]
    final = error.permanent or delivery.attempts >= settings.NOTIFICATION_DELIVERY_MAX_ATTEMPTS
    with transaction.atomic():
        if not final:
            delay = retry_delay(delivery.attempts, error.retry_after)
            updated = _mine(delivery).update(
                status=Delivery.Status.PENDING,
                next_attempt_at=now + timedelta(seconds=delay),
                claimed_until=None,
                last_error=message,
            )
            if updated:
                metrics.delivery_result(channel=delivery.channel, result="retrying")
                _delivery_audit(
                    delivery, "delivery.attempt_failed", error=message, retry_in=round(delay, 1)
                )
            return RetryLater(delay)
        updated = _mine(delivery).update(
            status=Delivery.Status.FAILED, claimed_until=None, last_error=message
        )
        if updated:
            _failed_for_good(delivery, error, message=message, now=now)
    return delivery


def _failed_for_good(
    delivery: Delivery, error: TransportError, *, message: str, now: datetime, **audit: Any
) -> None:
    """The rest of a final failure, once the row says ``failed``: a permanent error marks the
    contact point failing; audited; the person's next contact point is tried at once."""
    delivery.status, delivery.last_error = Delivery.Status.FAILED, message
    metrics.delivery_result(channel=delivery.channel, result="failed")
    if error.permanent and delivery.contact_point_id is not None:
        ContactPoint.objects.filter(
            pk=delivery.contact_point_id, failing_since__isnull=True
        ).update(failing_since=now, last_error=message)
    _delivery_audit(delivery, "delivery.failed", error=message, permanent=error.permanent, **audit)
    _fall_through(delivery, now=now)


def _fall_through(delivery: Delivery, *, now: datetime) -> Delivery | None:
    """After a final failure, the person's next usable contact point for the same event — while
    the escalation still waits at that event's level and round."""
    escalation, membership = delivery.escalation, delivery.membership
    if membership is None or escalation.status != Escalation.Status.PENDING:
        return None
    if (delivery.level, delivery.round) != (escalation.current_level, escalation.current_round):
        return None
    snapshot = _level_snapshot(escalation, delivery.level)
    tried = set(
        Delivery.objects.filter(
            escalation=escalation,
            membership=membership,
            kind=delivery.kind,
            generation=delivery.generation,
        ).values_list("contact_point_id", flat=True)
    )
    points = [
        point
        for point in contact_points_usable(
            membership,
            channels=list((snapshot or {}).get("channels") or []),
            priority=escalation.priority,
            now=now,
        )
        if point.pk not in tried
    ]
    if not points:
        return None
    created = _insert_new(
        [
            _new_delivery(
                escalation,
                membership=membership,
                contact_point=points[0],
                kind=delivery.kind,
                level=delivery.level,
                round_=delivery.round,
                generation=delivery.generation,
                now=now,
                fallback_of=delivery,
            )
        ]
    )
    if not created:
        return None
    _delivery_audit(created[0], "delivery.queued", fallback_of=delivery.public_id, count=1)
    _enqueue_after_commit(created[:1])
    return created[0]


def delivery_report_failed(
    *, channels: tuple[str, ...], provider_id: str, error: TransportError
) -> Delivery | None:
    """A provider reports that a message it had accepted never arrived (Twilio's status
    callback): handled like a send that failed for good.

    Only a ``sent`` delivery changes, to ``failed`` — providers repeat their callbacks, and a
    repeat finds nothing left to do. In the same transaction ``delivery.failed`` is audited
    (``reported_by: "provider"``), a ``permanent`` error marks the contact point failing, and,
    while the escalation still waits at the delivery's level and round, the person's next usable
    contact point gets a delivery for the same event (``_fall_through``). Returns the failed
    delivery, or None when no sent delivery on ``channels`` has ``provider_id``.
    """
    now = timezone.now()
    message = (error.message or "failed")[:500]
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_related("escalation", "membership__user")
            .filter(channel__in=channels, provider_id=provider_id, status=Delivery.Status.SENT)
            .first()
        )
        if delivery is None:
            return None
        # The conditional UPDATE is the lock: of two copies of one callback, one fails it.
        if not Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.SENT).update(
            status=Delivery.Status.FAILED, last_error=message
        ):
            return None
        _failed_for_good(delivery, error, message=message, now=now, reported_by="provider")
    return delivery


def delivery_report_delivered(
    *, channels: tuple[str, ...], provider_id: str, status: str
) -> Delivery | None:
    """A provider reports that a sent message reached the person (``delivered``) or was opened
    (``read``, WhatsApp's blue ticks).

    Recorded in the audit only — ``delivery.delivered`` / ``delivery.read``, on the escalation's
    timeline — once per delivery and status: the delivery row is locked while looking for an
    earlier record, so a repeated callback adds nothing. Returns the delivery, or None when
    nothing was recorded.
    """
    from audit.models import AuditEvent

    if status not in ("delivered", "read"):
        raise ValueError(f"not an arrival: {status}")
    action = f"delivery.{status}"
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(of=("self",))
            .select_related("escalation", "membership__user")
            .filter(channel__in=channels, provider_id=provider_id, status=Delivery.Status.SENT)
            .first()
        )
        if delivery is None:
            return None
        recorded = AuditEvent.objects.filter(
            organization_id=delivery.escalation.organization_id,
            target=delivery.escalation.public_id,
            action=action,
            data__delivery=delivery.public_id,
        ).exists()
        if recorded:
            return None
        _delivery_audit(delivery, action, reported_by="provider")
    return delivery


def deliveries_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Deliveries the sweep queues a send task for now: a retry that is due, a first send whose
    task was lost, a claim whose lease ran out (its worker died mid-send).

    The sweep cannot tell a lost task from one still waiting in a long queue, so a pending row
    it returns is marked (``claimed_until``, which a pending row has no other use for) and not
    returned again for ``NOTIFICATION_LOST_TASK_SECONDS``: a backlog gets one extra task per
    delivery and grace period, not one per sweep. The claim ignores the mark.
    """
    now = now or timezone.now()
    lost_after = timedelta(seconds=settings.NOTIFICATION_LOST_TASK_SECONDS)
    pending = Q(status=Delivery.Status.PENDING) & (
        Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)
    )
    due = (
        (pending & Q(next_attempt_at__lte=now))
        | (pending & Q(next_attempt_at__isnull=True, created_at__lte=now - lost_after))
        | Q(status=Delivery.Status.SENDING, claimed_until__lte=now)
    )
    with transaction.atomic():
        ids = list(Delivery.objects.filter(due).order_by("pk").values_list("pk", flat=True)[:limit])
        Delivery.objects.filter(pk__in=ids, status=Delivery.Status.PENDING).update(
            claimed_until=now + lost_after
        )
    return ids


# --- Contact points ---------------------------------------------------------------------------


def _next_position(membership: Membership) -> int:
    highest = membership.contact_points.aggregate(highest=Max("position"))["highest"]
    return (highest or 0) + 1


def _point_audit(point: ContactPoint, action: str, actor: dict[str, Any], **data: Any) -> None:
    audit_record(
        organization_id=point.membership.organization_id,
        action=action,
        actor=actor,
        target=point.public_id,
        data={"member": point.membership.public_id, "channel": point.channel, **data},
    )


def channels_available() -> list[str]:
    """The channels this server can send on: a transport whose provider settings are set."""
    return [channel for channel, transport in TRANSPORTS.items() if transport.configured()]


def _channel_label(channel: str) -> str:
    return str(dict(ContactPoint._meta.get_field("channel").choices).get(channel, channel))


# E.164: "+", a country code that does not start with 0, at most 15 digits in all.
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_PHONE_SEPARATORS = re.compile(r"[\s().\-]")
# A Slack member id (profile → ⋯ → Copy member ID): U… or, on Enterprise Grid, W….
_SLACK_MEMBER = re.compile(r"[UW][A-Z0-9]{4,20}")


def _address_normalise(channel: str, address: str) -> str:
    """The address as the provider will report it back (inbound answers are matched on it)."""
    address = address.strip()
    if channel == "email":
        try:
            validate_email(address)
        except ValidationError as exc:
            raise ContactPointError("Enter a valid e-mail address.") from exc
        return address.lower()
    if channel in ("sms", "whatsapp"):
        number = _PHONE_SEPARATORS.sub("", address.removeprefix("whatsapp:"))
        if number.startswith("00"):
            number = "+" + number[2:]
        if not _E164.fullmatch(number):
            raise ContactPointError(
                "Enter the number in international format with its country code, like +14155550123."
            )
        return number
    if channel == "slack":
        if not _SLACK_MEMBER.fullmatch(address):
            raise ContactPointError(
                "Enter your Slack member ID, like U012AB3CD (in Slack: your profile → ⋯ → "
                "Copy member ID)."
            )
        return address
    if not address or len(address) > 320:
        raise ContactPointError("Enter an address.")
    return address


def _contact_point_create(
    *,
    membership: Membership,
    channel: str,
    address: str,
    priorities: list[str] | None,
    config: dict[str, Any] | None = None,
) -> ContactPoint:
    preference_get(membership)  # the account e-mail is seeded first, so it stays first
    if channel not in TRANSPORTS:
        raise ContactPointError("That channel does not exist.")
    if channel not in channels_available():
        raise ContactPointError(
            f"{_channel_label(channel)} is not set up on this server; an administrator can "
            "turn it on (docs/channels.md)."
        )
    priorities = [p for p in (priorities or []) if p in Escalation.Priority.values]
    with transaction.atomic():
        if membership.contact_points.filter(channel=channel, address=address).exists():
            raise ContactPointError("You already have that contact point.")
        point = ContactPoint.objects.create(
            membership=membership,
            channel=channel,
            address=address,
            priorities=priorities,
            config=config or {},
            position=_next_position(membership),
        )
        _point_audit(point, "contact_point.added", membership.as_actor(), priorities=priorities)
    return point


def contact_point_add(
    *, membership: Membership, channel: str, address: str, priorities: list[str] | None = None
) -> ContactPoint:
    """Add an unverified contact point at the end of the person's list."""
    if channel == "push":
        raise ContactPointError(
            "Web Push is added from the browser that should receive it: use “Notify this browser”."
        )
    if refusal := channel_refusal(membership.organization, [channel]):
        raise ContactPointError(refusal)
    return _contact_point_create(
        membership=membership,
        channel=channel,
        address=_address_normalise(channel, address),
        priorities=priorities,
    )


def contact_point_add_push(
    *, membership: Membership, subscription: Any, label: str = ""
) -> ContactPoint:
    """Add this browser's Web Push subscription (``PushSubscription.toJSON()``), unverified:
    the code arrives as a push, which proves the subscription works end to end."""
    if not isinstance(subscription, dict):
        raise ContactPointError("subscription: expected the browser's PushSubscription JSON.")
    endpoint, keys = subscription.get("endpoint"), subscription.get("keys")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
        raise ContactPointError("subscription.endpoint: expected the push service's URL.")
    if len(endpoint) > 2000:
        raise ContactPointError("subscription.endpoint: longer than 2,000 characters.")
    if not isinstance(keys, dict) or not all(
        isinstance(keys.get(name), str) and 0 < len(keys[name]) <= 200
        for name in ("p256dh", "auth")
    ):
        raise ContactPointError("subscription.keys: expected p256dh and auth.")
    label = " ".join(str(label or "").split())[:60] or "Browser"
    fingerprint = salted_hmac(_VERIFICATION_SALT, endpoint).hexdigest()[:6]
    return _contact_point_create(
        membership=membership,
        channel="push",
        address=f"{label} · {parts.hostname} · {fingerprint}",
        priorities=None,
        config={"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}},
    )


def contact_point_remove(*, contact_point: ContactPoint, membership: Membership) -> None:
    with transaction.atomic():
        _point_audit(contact_point, "contact_point.removed", membership.as_actor())
        contact_point.delete()


def contact_point_move(*, contact_point: ContactPoint, membership: Membership, up: bool) -> None:
    """Swap with the neighbour above (``up``) or below; positions are renumbered 1, 2, 3…"""
    with transaction.atomic():
        points = list(
            ContactPoint.objects.select_for_update()
            .filter(membership=membership)
            .order_by("position", "id")
        )
        index = next(i for i, point in enumerate(points) if point.pk == contact_point.pk)
        other = index - 1 if up else index + 1
        if not 0 <= other < len(points):
            return
        points[index], points[other] = points[other], points[index]
        for position, point in enumerate(points, start=1):
            if point.position != position:
                point.position = position
                point.save(update_fields=["position"])
        _point_audit(
            contact_point,
            "contact_point.reordered",
            membership.as_actor(),
            order=[point.public_id for point in points],
        )


def contact_point_set_priorities(
    *, contact_point: ContactPoint, membership: Membership, priorities: list[str]
) -> None:
    priorities = [p for p in Escalation.Priority.values if p in priorities]
    with transaction.atomic():
        contact_point.priorities = priorities
        contact_point.save(update_fields=["priorities"])
        _point_audit(
            contact_point, "contact_point.updated", membership.as_actor(), priorities=priorities
        )


def _code_digest(point: ContactPoint, code: str) -> str:
    return salted_hmac(_VERIFICATION_SALT, f"{point.public_id}:{code}").hexdigest()


def contact_point_verification_begin(
    *, contact_point: ContactPoint, now: datetime | None = None
) -> str | None:
    """Send a verification code (or start the channel's own round trip).

    Returns the instructions a round-trip channel wants shown, or None when a code was sent.
    Resends are throttled to one a minute.
    """
    now = now or timezone.now()
    if contact_point.verified_at is not None:
        raise ContactPointError("This contact point is already verified.")
    transport = TRANSPORTS[contact_point.channel]()
    try:
        instructions = transport.begin_verification(contact_point)
    except TransportError as exc:
        raise ContactPointError(f"Verification could not start: {exc.message}") from exc
    if instructions is not None:
        return instructions
    sent = contact_point.verification_sent_at
    if sent is not None and now - sent < VERIFICATION_RESEND_AFTER:
        raise ContactPointError("A code was just sent; wait a minute before asking again.")
    code = f"{secrets.randbelow(10**6):06d}"
    with transaction.atomic():
        contact_point.verification_digest = _code_digest(contact_point, code)
        contact_point.verification_expires_at = now + VERIFICATION_TTL
        contact_point.verification_attempts = 0
        contact_point.verification_sent_at = now
        contact_point.save(
            update_fields=[
                "verification_digest",
                "verification_expires_at",
                "verification_attempts",
                "verification_sent_at",
            ]
        )
        _point_audit(contact_point, "contact_point.verification_sent", SYSTEM_ACTOR)
    try:
        transport.send_verification(contact_point, code)
    except TransportError as exc:
        raise ContactPointError(f"The code could not be sent: {exc.message}") from exc
    return None


def contact_point_verify(*, contact_point: ContactPoint, membership: Membership, code: str) -> None:
    """Check a typed code; five wrong guesses burn it (ask for a new one)."""
    now = timezone.now()
    code = "".join(code.split())
    with transaction.atomic():
        point = ContactPoint.objects.select_for_update().get(pk=contact_point.pk)
        if point.verified_at is not None:
            return
        if not point.verification_digest or (
            point.verification_expires_at is not None and point.verification_expires_at < now
        ):
            raise ContactPointError("That code has expired; send a new one.")
        if point.verification_attempts >= VERIFICATION_MAX_ATTEMPTS:
            raise ContactPointError("Too many wrong codes; send a new one.")
        if not hmac.compare_digest(point.verification_digest, _code_digest(point, code)):
            point.verification_attempts += 1
            point.save(update_fields=["verification_attempts"])
            left = VERIFICATION_MAX_ATTEMPTS - point.verification_attempts
            # Raised after the block, so the wrong guess is committed rather than rolled back
            # with the error: otherwise the counter would be no throttle at all.
            error = ContactPointError(
                f"That code is not right ({left} tries left)."
                if left
                else "Too many wrong codes; send a new one."
            )
        else:
            error = None
            contact_point_mark_verified(contact_point=point, actor=membership.as_actor())
    if error is not None:
        raise error
    contact_point.verified_at = point.verified_at


def contact_point_mark_verified(*, contact_point: ContactPoint, actor: dict[str, Any]) -> None:
    """The address is proven (a code typed, or a channel's round trip completed)."""
    with transaction.atomic():
        contact_point.verified_at = timezone.now()
        contact_point.verification_digest = ""
        contact_point.verification_expires_at = None
        contact_point.verification_attempts = 0
        contact_point.failing_since = None
        contact_point.last_error = ""
        contact_point.save(
            update_fields=[
                "verified_at",
                "verification_digest",
                "verification_expires_at",
                "verification_attempts",
                "failing_since",
                "last_error",
            ]
        )
        _point_audit(contact_point, "contact_point.verified", actor)


def contact_point_send_test(*, contact_point: ContactPoint, membership: Membership) -> str:
    """Send a test now (the person is watching); a success clears a failing mark."""
    if contact_point.verified_at is None:
        raise ContactPointError("Verify this contact point first.")
    transport = TRANSPORTS[contact_point.channel]()
    try:
        provider_id = transport.send_test(contact_point)
    except TransportError as exc:
        with transaction.atomic():
            contact_point.last_error = exc.message[:500]
            contact_point.save(update_fields=["last_error"])
            _point_audit(
                contact_point, "contact_point.test_failed", membership.as_actor(), error=exc.message
            )
        raise ContactPointError(f"The test failed: {exc.message}") from exc
    with transaction.atomic():
        contact_point.failing_since = None
        contact_point.last_error = ""
        contact_point.save(update_fields=["failing_since", "last_error"])
        _point_audit(contact_point, "contact_point.test_sent", membership.as_actor())
    return provider_id or ""


def preference_update(
    *,
    membership: Membership,
    quiet_start: time | None,
    quiet_end: time | None,
    time_zone: str,
) -> NotificationPreference:
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ContactPointError(f"Unknown time zone: {time_zone}") from exc
    if (quiet_start is None) != (quiet_end is None):
        raise ContactPointError("Quiet hours need both a start and an end.")
    preference = preference_get(membership)
    with transaction.atomic():
        preference.quiet_start, preference.quiet_end = quiet_start, quiet_end
        preference.time_zone = time_zone
        preference.save(update_fields=["quiet_start", "quiet_end", "time_zone"])
        audit_record(
            organization_id=membership.organization_id,
            action="notification_preference.updated",
            actor=membership.as_actor(),
            target=membership.public_id,
            data={
                "quiet_start": quiet_start.isoformat() if quiet_start else None,
                "quiet_end": quiet_end.isoformat() if quiet_end else None,
                "time_zone": time_zone,
            },
        )
    return preference


def preference_set_all_points_for(
    *, membership: Membership, priorities: list[str]
) -> NotificationPreference:
    """The priorities that reach the person on every usable contact point at once."""
    priorities = [p for p in Escalation.Priority.values if p in priorities]
    preference = preference_get(membership)
    with transaction.atomic():
        preference.all_points_for = priorities
        preference.save(update_fields=["all_points_for"])
        audit_record(
            organization_id=membership.organization_id,
            action="notification_preference.updated",
            actor=membership.as_actor(),
            target=membership.public_id,
            data={"all_points_for": priorities},
        )
    return preference
