"""Durable effects: the transactional outbox and its dispatcher.

A state change calls ``outbox_write`` inside its transaction: one ``OutboxEvent`` row per consumer
that wants the event (``escalations.hooks``), in the same commit as the change and its audit
event. After commit, ``outbox_nudge`` asks for a dispatch soon; whether or not that nudge arrives
(a crash, a broker outage), the periodic dispatch (Celery beat in production, the in-process
ticker in the embedded default) finds the rows. Nothing is lost once the change has committed.

``outbox_dispatch`` claims due rows in id order with ``FOR UPDATE SKIP LOCKED``, so dispatchers
in several processes never take the same row, and leaves alone any row whose escalation still has
an earlier row owed to the same consumer outside its claim (claimed by another dispatcher,
waiting for a retry or parked): per escalation, each consumer sees its events in order.

Each consumer gets its rows as one batch inside a savepoint; if the batch raises, its rows are
tried one by one so that only the failing event is retried later (with backoff) and, after
``MAX_ATTEMPTS``, parked. One consumer's failure never touches another consumer's rows.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Min, OuterRef, Q
from django.utils import timezone

from audit.services import audit_record
from awaithuman import metrics, telemetry
from awaithuman.celery import app, enqueue

from . import hooks, timers
from .models import OutboxEvent

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 8
BATCH_SIZE = 1000
_NUDGE_KEY = "awaithuman:outbox-nudged"


def outbox_write(*, escalation_id: int, event: str, payload: dict[str, Any]) -> None:
    """Owe ``event`` to every interested consumer. Must run in the change's transaction."""
    outbox_write_many([(escalation_id, event, payload)])


def outbox_write_many(events: list[tuple[int, str, dict[str, Any]]]) -> None:
    """``outbox_write`` for many (escalation id, event, payload) triples, in one INSERT."""
    now = timezone.now()
    # With tracing on, each row carries the trace of the change to the consumer (telemetry.py).
    carrier = telemetry.trace_carrier()
    rows = [
        OutboxEvent(
            escalation_id=escalation_id,
            consumer=name,
            event=event,
            payload={**payload, telemetry.TRACE_KEY: carrier} if carrier else payload,
            created_at=now,
            available_at=now,
        )
        for escalation_id, event, payload in events
        for name in hooks.interested(event)
    ]
    if rows:
        OutboxEvent.objects.bulk_create(rows, batch_size=5000)
        nudge_on_commit()


def _backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(2**attempts, 300))


def outbox_dispatch(*, limit: int = BATCH_SIZE) -> int:
    """Hand due outbox rows to their consumers; returns how many rows were handled (done,
    retried later or parked). Safe to run from any number of processes at once."""
    now = timezone.now()
    # Rows stuck behind a parked or backing-off row are not even claimed, so that they can never
    # fill a batch and starve the rows behind them.
    held_back = OutboxEvent.objects.filter(
        Q(parked_at__isnull=False) | Q(available_at__gt=now),
        escalation_id=OuterRef("escalation_id"),
        consumer=OuterRef("consumer"),
        id__lt=OuterRef("id"),
    )
    with transaction.atomic():
        claimed = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(parked_at__isnull=True, available_at__lte=now)
            .exclude(Exists(held_back))
            .order_by("id")[:limit]
        )
        if not claimed:
            return 0
        rows = _in_order(claimed)
        metrics.outbox_dispatched([row.available_at for row in rows], now)
        by_consumer: dict[str, list[OutboxEvent]] = defaultdict(list)
        for row in rows:
            by_consumer[row.consumer].append(row)
        done: list[int] = []
        failed: list[OutboxEvent] = []
        for name, consumer_rows in by_consumer.items():
            ok, bad = _run_consumer(name, consumer_rows, now)
            done.extend(ok)
            failed.extend(bad)
        if done:
            OutboxEvent.objects.filter(pk__in=done).delete()
        if failed:
            OutboxEvent.objects.bulk_update(
                failed, ["attempts", "available_at", "last_error", "parked_at"]
            )
    return len(rows)


def _in_order(claimed: list[OutboxEvent]) -> list[OutboxEvent]:
    """Drop the claimed rows that an unclaimed earlier row of the same escalation and consumer
    must precede (one backing off, parked, or claimed by another dispatcher)."""
    claimed_ids = [row.pk for row in claimed]
    first_unclaimed = dict(
        ((escalation_id, consumer), first_id)
        for escalation_id, consumer, first_id in OutboxEvent.objects.filter(
            escalation_id__in={row.escalation_id for row in claimed}, id__lt=claimed_ids[-1]
        )
        .exclude(pk__in=claimed_ids)
        .values("escalation_id", "consumer")
        .annotate(first_id=Min("id"))
        .values_list("escalation_id", "consumer", "first_id")
    )
    return [
        row
        for row in claimed
        if first_unclaimed.get((row.escalation_id, row.consumer), row.pk) >= row.pk
    ]


def _run_consumer(
    name: str, rows: list[OutboxEvent], now: Any
) -> tuple[list[int], list[OutboxEvent]]:
    consumer = hooks.consumer(name)
    if consumer is None:
        for row in rows:
            row.last_error = f"no consumer named {name!r} is registered in this process"
            row.parked_at = now
        return [], rows
    events = [hooks.Event(row.escalation_id, row.event, row.payload) for row in rows]
    try:
        with transaction.atomic():
            for carrier, run in _runs_by_trace(events):
                with telemetry.continued(carrier, f"outbox {name}"):
                    consumer.handle(run)
            _check_deferred()
        return [row.pk for row in rows], []
    except Exception:
        logger.warning(
            "outbox consumer %s failed on a batch of %d; retrying one by one", name, len(rows)
        )
    done: list[int] = []
    failed: list[OutboxEvent] = []
    blocked: set[int] = set()  # escalations whose earlier event failed: keep their order
    for row, event in zip(rows, events, strict=True):
        if row.escalation_id in blocked:
            continue
        try:
            with transaction.atomic(), telemetry.continued(_carrier(event), f"outbox {name}"):
                consumer.handle([event])
                _check_deferred()
        except Exception as exc:
            logger.exception(
                "outbox consumer %s failed on %s of escalation %s (attempt %d)",
                name,
                row.event,
                row.escalation_id,
                row.attempts + 1,
            )
            blocked.add(row.escalation_id)
            row.attempts += 1
            row.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            row.available_at = now + _backoff(row.attempts)
            if row.attempts >= MAX_ATTEMPTS:
                row.parked_at = now
            failed.append(row)
        else:
            done.append(row.pk)
    return done, failed


def _check_deferred() -> None:
    """Check the consumer's deferred constraints now, inside its savepoint.

    PostgreSQL checks foreign keys (Django makes them ``DEFERRABLE INITIALLY DEFERRED``) at
    COMMIT: a consumer's bad reference, or its wait for a row lock held elsewhere, would
    otherwise fail the whole batch's commit, and every consumer's rows with it, instead of
    only this consumer's rows. SQLite has a single writer and no such waits.
    """
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        connection.check_constraints()


def _carrier(event: hooks.Event) -> dict[str, str] | None:
    return event.payload.get(telemetry.TRACE_KEY)


def _runs_by_trace(
    events: list[hooks.Event],
) -> Iterator[tuple[dict[str, str] | None, list[hooks.Event]]]:
    """The batch cut into runs of consecutive events of one trace (order kept); without
    tracing, the whole batch is one run."""
    for _, run in itertools.groupby(events, key=lambda event: str(_carrier(event))):
        run_events = list(run)
        yield _carrier(run_events[0]), run_events


def outbox_drain(*, limit: int = BATCH_SIZE) -> int:
    """Dispatch until nothing is due (or only failing rows are left); returns rows handled."""
    total = 0
    while True:
        handled = outbox_dispatch(limit=limit)
        total += handled
        if handled < limit:
            return total


def outbox_parked(*, organization_id: int) -> Any:
    """The organization's effects that stopped being retried, newest first."""
    return (
        OutboxEvent.objects.filter(
            escalation__organization_id=organization_id, parked_at__isnull=False
        )
        .select_related("escalation")
        .order_by("-parked_at", "-id")
    )


@transaction.atomic
def outbox_retry(*, ids: list[int], actor: dict[str, Any]) -> int:
    """Make parked (or backing-off) rows due now, as a person retrying them once the cause is
    fixed; audited in each organization the rows belong to."""
    rows = list(
        OutboxEvent.objects.select_for_update()
        .filter(pk__in=ids)
        .values_list("pk", "escalation__organization_id", "consumer", "event")
    )
    by_organization: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for pk, organization_id, consumer, event in rows:
        by_organization[organization_id].append({"id": pk, "consumer": consumer, "event": event})
    for organization_id, retried in sorted(by_organization.items()):
        audit_record(
            organization_id=organization_id,
            action="outbox.retried",
            actor=actor,
            data={"events": retried},
        )
    OutboxEvent.objects.filter(pk__in=[pk for pk, *_ in rows]).update(
        parked_at=None, available_at=timezone.now(), attempts=0
    )
    return len(rows)


# --- Nudging a dispatcher right after commit -------------------------------------------------


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2
        )
    return _client


_client: redis.Redis | None = None


def nudge_on_commit() -> None:
    """``outbox_nudge`` once the current transaction commits; once per transaction, however
    many events and audit records it writes."""
    connection = transaction.get_connection()
    if connection.in_atomic_block:
        current = set(connection.savepoint_ids)
        for savepoints, func, _ in connection.run_on_commit:
            # Registered at this level or an outer one: it runs whenever this work commits.
            if func is outbox_nudge and savepoints <= current:
                return
    transaction.on_commit(outbox_nudge)


def outbox_nudge() -> None:
    """Ask for a dispatch now, cheaply: the caller's commit has just made outbox rows due (or
    written audit events to seal).

    With the in-process ticker (embedded default) this wakes it. Otherwise it queues the
    dispatch task, at most once per ``OUTBOX_NUDGE_SECONDS`` per deployment (a Redis
    ``SET NX``): a burst of creates shares one task, which drains everything due. A lost nudge
    only delays the effects until the next periodic dispatch.
    """
    if timers.nudge():
        return
    if settings.REDIS_URL and not app.conf.task_always_eager:
        try:
            first = _redis().set(
                _NUDGE_KEY, "1", nx=True, px=int(settings.OUTBOX_NUDGE_SECONDS * 1000)
            )
        except redis.RedisError:
            logger.warning("could not nudge the outbox dispatcher; the periodic one will run")
            return
        if not first:
            return
    # By name: the task module imports this one.
    enqueue(app.tasks[timers.OUTBOX_TASK], ())


def nudge_consumed() -> None:
    """A dispatch task has started: the next commit may queue another."""
    if settings.REDIS_URL:
        # Failing that, the key's own expiry lets the next commit queue a dispatch.
        with contextlib.suppress(redis.RedisError):
            _redis().delete(_NUDGE_KEY)
