"""Sending deliveries, and what providers report about them afterwards.

Sending (``deliveries_send``: one event's deliveries together; ``delivery_send``: one) claims
the rows with a conditional UPDATE, checks that the escalation still waits at each delivery's
level, calls the channel's transport, and records the outcome: sent; a transient failure
retried later with backoff; or a permanent one, which marks the contact point failing and falls
through at once to the person's next contact point. Once an escalation is terminal, the
messages already sent on channels that can edit them are made to show the outcome.

The send tasks (``notifications.tasks``) call into this module, so it queues them by name.
"""

from __future__ import annotations

import functools
import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from audit.services import SYSTEM_ACTOR, audit_record
from awaithuman import metrics
from awaithuman.celery import app, enqueue
from escalations import hooks
from escalations.models import Escalation
from tenants.ids import new_public_id
from tenants.models import Membership

from .contact_points import contact_points_usable
from .models import ContactPoint, Delivery
from .transports import TRANSPORTS, TransportError

logger = logging.getLogger(__name__)

# Deliveries per send task, at most (an escalation's are never split).
SEND_TASK_DELIVERIES = 20
# Channels whose sent messages can be edited (or replaced) to show the outcome.
EDITABLE_CHANNELS = ("telegram", "slack", "push")
TERMINAL_EVENTS = frozenset({"decided", "expired", "cancelled"})
DELIVER_MANY_TASK = "notifications.tasks.deliver_many"
MESSAGES_UPDATE_TASK = "notifications.tasks.messages_update_after_decision"


# --- New deliveries -----------------------------------------------------------------------------


def level_snapshot(escalation: Escalation, level: int) -> dict[str, Any] | None:
    levels = (escalation.policy_snapshot or {}).get("levels") or []
    return levels[level - 1] if 0 < level <= len(levels) else None


def delivery_new(
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


def deliveries_insert(rows: list[Delivery]) -> list[Delivery]:
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


def deliveries_enqueue_after_commit(created: list[Delivery]) -> None:
    """After commit, queue the sends: an escalation's deliveries go out together, in tasks of
    about ``SEND_TASK_DELIVERIES`` — a burst of a thousand creates is a few dozen tasks to
    publish and run, not a thousand."""
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
    transaction.on_commit(lambda: enqueue(app.tasks[DELIVER_MANY_TASK], *calls))


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
    snapshot = level_snapshot(escalation, delivery.level)
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
    created = deliveries_insert(
        [
            delivery_new(
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
    deliveries_enqueue_after_commit(created[:1])
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


# --- Editing sent messages after the decision ---------------------------------------------------


def _sent_editable(escalation_ids: int | set[int]) -> Any:
    ids = {escalation_ids} if isinstance(escalation_ids, int) else escalation_ids
    return Delivery.objects.filter(
        escalation_id__in=ids,
        status=Delivery.Status.SENT,
        channel__in=EDITABLE_CHANNELS,
    )


def messages_update_on_terminal(events: list[hooks.Event]) -> None:
    """The outbox consumer ``notifications.messages``: once terminal, have the messages already
    sent show the outcome. Most escalations have none to edit (a timeout sweep of thousands,
    e-mail and SMS only): one indexed query for the whole batch spares them a task each."""
    terminal = {event.escalation_id for event in events if event.event in TERMINAL_EVENTS}
    if not terminal:
        return
    editable = set(_sent_editable(terminal).values_list("escalation_id", flat=True).distinct())
    for escalation_id in sorted(editable):
        transaction.on_commit(
            functools.partial(enqueue, app.tasks[MESSAGES_UPDATE_TASK], (escalation_id,))
        )


def messages_update_after_decision(escalation_id: int) -> None:
    """Edit every sent Telegram/Slack message (and replace push notifications) of a terminal
    escalation. A provider failure is logged and skipped: the decision stands either way."""
    deliveries = _sent_editable(escalation_id).select_related(
        "escalation", "contact_point", "membership__user"
    )
    for delivery in deliveries:
        if not delivery.escalation.is_terminal or delivery.contact_point is None:
            return
        transport = TRANSPORTS.get(delivery.channel)
        if transport is None:
            continue
        try:
            transport().update_after_decision(delivery)
        except Exception:
            # Also keeps an eager (embedded) run from turning a provider hiccup into an error
            # on the answer request that decided it.
            logger.warning(
                "update after decision failed delivery=%s escalation=%s",
                delivery.public_id,
                delivery.escalation.public_id,
                exc_info=True,
            )
