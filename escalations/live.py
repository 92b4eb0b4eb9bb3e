"""The live queue's data: the rows the queue page shows, and the frames its websocket carries.

One shape serves both: ``queue_rows`` renders the page and answers a socket's ``sync`` request,
``queue_frames`` (an outbox consumer, registered in ``EscalationsConfig.ready``) turns every
queue-visible event into one small delta frame per event — read once, encoded once — and sends it
to the organization's channel-layer group ``org.<public id>``. Consumers forward the encoded text
as it is: no per-socket work beyond the send.

Ordering and resync: every frame carries ``seq``, the organization's audit chain head read *in the
same statement* as the row. Every state change writes an audit event, so ``seq`` is a version of
the whole organization's queue: a client drops a delta whose ``seq`` is older than what it already
holds for that row (or than its last snapshot). That makes a snapshot plus the deltas that race
with it converge, and so does a stale frame from another process that lost a race to the layer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.db import transaction
from django.db.models import Case, Count, IntegerField, OuterRef, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce

from audit.models import ChainHead
from tenants.models import Organization

from . import hooks
from .models import Escalation, Response

logger = logging.getLogger(__name__)

# The events that change what the queue shows. ``level_entered`` (level 1) always arrives together
# with ``created``; reminders and deadline warnings change nothing on the row.
QUEUE_EVENTS = frozenset(
    {"created", "escalated", "claimed", "released", "answered", "decided", "expired", "cancelled"}
)

SEND_TIMEOUT_SECONDS = 5

PRIORITY_RANK = {"urgent": 0, "high": 1, "normal": 2, "low": 3}

# The loop the consumers run on. The in-memory layer (embedded default) is a set of asyncio
# queues owned by that loop: a hook fired on another thread with its own loop (the in-process
# timer ticker) must hand the send to it rather than touch the queues from outside.
_consumer_loop: asyncio.AbstractEventLoop | None = None


def organization_group(organization_public_id: str) -> str:
    return f"org.{organization_public_id}"


def _chain_seq() -> Subquery:
    return Subquery(
        ChainHead.objects.filter(organization_id=OuterRef("organization_id")).values("seq")[:1],
        output_field=IntegerField(),
    )


def _approvals() -> Coalesce:
    # A correlated count, not a join + GROUP BY over every selected column.
    return Coalesce(
        Subquery(
            Response.objects.filter(escalation=OuterRef("pk"), outcome=Response.Outcome.APPROVE)
            .values("escalation")
            .annotate(count=Count("pk"))
            .values("count")[:1],
            output_field=IntegerField(),
        ),
        Value(0),
    )


def _queue_queryset() -> QuerySet[Escalation]:
    return (
        Escalation.objects.select_related("agent", "assignee__user")
        .annotate(
            approvals=_approvals(),
            priority_rank=Case(
                *(When(priority=name, then=Value(rank)) for name, rank in PRIORITY_RANK.items()),
                default=Value(len(PRIORITY_RANK)),
                output_field=IntegerField(),
            ),
        )
        .order_by("priority_rank", "created_at", "id")
    )


QUEUE_DEFERRED = (
    "action",
    "context",
    "response_schema",
    "metadata",
    "decision_response",
    "edited_arguments",
    "agent__description",
)


def pending_escalations(organization: Organization) -> QuerySet[Escalation]:
    """The organization's pending escalations, most urgent first, then oldest first (one query)."""
    return (
        _queue_queryset()
        .filter(organization=organization, status=Escalation.Status.PENDING)
        # The agent's picture can be large and the queue never shows it: don't load or decode it.
        .defer(*QUEUE_DEFERRED)
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def queue_row(escalation: Escalation) -> dict[str, Any]:
    """What one queue row shows; ``escalation`` comes from ``pending_escalations``-style queries."""
    assignee = escalation.assignee
    return {
        "id": escalation.public_id,
        "status": escalation.status,
        "kind": escalation.kind,
        "title": escalation.title,
        "priority": escalation.priority,
        "agent": escalation.agent.name,
        "claimed_by": assignee.user.email if assignee is not None else None,
        "claimed_by_id": assignee.public_id if assignee is not None else None,
        "level": escalation.current_level,
        "levels": len((escalation.policy_snapshot or {}).get("levels") or []),
        "created_at": _iso(escalation.created_at),
        "expires_at": _iso(escalation.expires_at),
        "approvals": getattr(escalation, "approvals", 0),
        "claimed_at": _iso(escalation.claimed_at),
        "required_approvals": escalation.required_approvals,
    }


def queue_snapshot(organization: Organization) -> dict[str, Any]:
    """The full pending list and the ``seq`` it is at least as new as (two queries).

    The chain head is read *before* the rows: under READ COMMITTED the rows may then be newer
    than ``seq`` but never older, so a client that drops deltas with ``seq`` ≤ this one drops
    nothing the snapshot does not already show.
    """
    head = (
        ChainHead.objects.filter(organization_id=organization.pk)
        .values_list("seq", flat=True)
        .first()
    )
    rows = [queue_row(escalation) for escalation in pending_escalations(organization)]
    return {"type": "snapshot", "seq": head or 0, "escalations": rows}


def queue_frames_for(events: list[tuple[int, str]]) -> list[tuple[str, str] | None]:
    """The group and the encoded delta frame for each (escalation id, event) pair, or None
    where the row is gone; one query for all rows."""
    rows = {
        escalation.pk: escalation
        for escalation in Escalation.objects.select_related(
            "agent", "assignee__user", "organization"
        )
        .annotate(approvals=_approvals(), seq=_chain_seq())
        .defer(*QUEUE_DEFERRED)
        .filter(pk__in={escalation_id for escalation_id, _ in events})
        .order_by()
    }
    frames: list[tuple[str, str] | None] = []
    for escalation_id, event in events:
        escalation = rows.get(escalation_id)
        if escalation is None:
            frames.append(None)
            continue
        frame = {
            "type": "escalation",
            "event": event,
            "seq": escalation.seq or 0,
            "escalation": queue_row(escalation),
        }
        text = json.dumps(frame, separators=(",", ":"))
        frames.append((organization_group(escalation.organization.public_id), text))
    return frames


def remember_consumer_loop() -> None:
    """Called by a consumer on connect (from its event loop)."""
    global _consumer_loop
    _consumer_loop = asyncio.get_running_loop()


_sender: asyncio.AbstractEventLoop | None = None
_sender_lock = threading.Lock()


def _sender_loop() -> asyncio.AbstractEventLoop:
    """One long-lived loop per process for sends from synchronous code.

    ``async_to_sync`` from a plain thread runs each call on a fresh event loop, and channels-redis
    keeps its connections per loop: every event would open (and drop) a Redis connection. One
    loop in a daemon thread keeps one warm connection pool for the process.
    """
    global _sender
    with _sender_lock:
        if _sender is None or _sender.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="live-queue-sender", daemon=True).start()
            _sender = loop
        return _sender


def group_send(group: str, message: dict[str, Any]) -> None:
    """Send to a channel-layer group from synchronous code, whatever thread it runs on."""
    layer = get_channel_layer()
    if layer is None:
        return
    if isinstance(layer, InMemoryChannelLayer):
        if not layer.groups.get(group):
            return  # nobody is watching this organization's queue in this process
        # The in-memory layer is a set of asyncio queues owned by the consumers' loop.
        loop = _consumer_loop
        if loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop).result(5)
                return
        async_to_sync(layer.group_send)(group, message)
        return
    future = asyncio.run_coroutine_threadsafe(layer.group_send(group, message), _sender_loop())
    future.result(SEND_TIMEOUT_SECONDS)


def queue_frames(events: list[hooks.Event]) -> None:
    """Outbox consumer: one delta frame per queue-visible event, sent to the organization's
    operators once the dispatcher has committed. A send that fails is logged: clients catch up
    at their next resync, and the dispatch is not retried for it."""
    wanted = [(event.escalation_id, event.event) for event in events if event.event in QUEUE_EVENTS]
    frames = [frame for frame in queue_frames_for(wanted) if frame is not None] if wanted else []
    if frames:
        transaction.on_commit(lambda: _send_frames(frames))


def _send_frames(frames: list[tuple[str, str]]) -> None:
    for group, text in frames:
        try:
            group_send(group, {"type": "queue.frame", "text": text})
        except Exception:
            logger.exception("could not push a frame to the live queue group %s", group)


def membership_removed(organization: Organization, membership_public_id: str) -> None:
    """``tenants.hooks`` consumer: once the removal commits, tell the organization's live-queue
    sockets, so that the removed member's close at once."""
    group = organization_group(organization.public_id)
    message = {"type": "membership.removed", "membership": membership_public_id}
    transaction.on_commit(lambda: group_send(group, message))
