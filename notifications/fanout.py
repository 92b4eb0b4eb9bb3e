"""Fan-out: when an escalation enters a level, one Delivery per target person.

``deliveries_fan_out_many`` is the outbox consumer ``notifications.fanout`` (registered in
``NotificationsConfig.ready``): the outbox dispatcher (a Celery worker in production, the
in-process ticker in the embedded default) calls it with a batch of events inside its own
transaction. It turns each event into one ``Delivery`` per target person — to their first usable
contact point, or to every one for the priorities their rule says
(``NotificationPreference.all_points_for``) — in one transaction with its audit event, and
queues the send tasks after commit. The constraints on ``Delivery`` make a repeated event (a
dispatcher killed mid-batch, two tickers) create nothing twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from audit.services import SYSTEM_ACTOR, audit_batch, audit_record
from escalations import hooks
from escalations.models import Escalation
from tenants.models import Membership

from .contact_points import contact_points_usable_among, preference_get
from .deliveries import (
    deliveries_enqueue_after_commit,
    deliveries_insert,
    delivery_new,
    level_snapshot,
)
from .models import ContactPoint, Delivery, NotificationPreference

logger = logging.getLogger(__name__)

# Escalation events that notify people, and the delivery kind each one makes.
NOTIFYING_EVENTS = {
    "created": "level_entered",  # only for escalations without policy levels (see below)
    "level_entered": "level_entered",
    "escalated": "escalated",
    "reminder": "reminder",
    "deadline_warning": "deadline_warning",
}


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
                points = contact_points_usable_among(
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
                    delivery_new(
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
        created = deliveries_insert(rows)
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
            deliveries_enqueue_after_commit(created)
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
    snapshot = (level_snapshot(escalation, level) if has_levels else None) or {}
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
                {
                    "id": row.public_id,
                    # Always set: the fan-out makes each row for a member.
                    "member": row.membership.public_id if row.membership else None,
                    "channel": row.channel,
                }
                for row in created
            ],
            "unreachable": unreachable,
        },
    )
