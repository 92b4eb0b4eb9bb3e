"""What time does to a pending escalation: levels, reminders, the deadline warning, the timeout.

The database is the clock: ``next_action_at`` is the next moment something is due, and
``timers_due`` (a periodic task) acts on every row past it. ``policy_levels``, ``next_timer`` and
``level_entered`` are shared with ``escalation_create``, which enters the first level.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, prefetch_related_objects
from django.utils import timezone

from audit.services import SYSTEM_ACTOR, audit_batch, audit_record
from awaithuman import metrics

from . import wakeups
from .decisions import after_commit, decide, decision_audited
from .models import Escalation
from .outbox import outbox_write_many
from .receipts import receipt_sign

# Keyed by the stored value (a plain str from the database; a choice equals its value).
_TIMEOUT_STATUS: dict[str, Escalation.Status] = {
    Escalation.OnTimeout.APPROVE: Escalation.Status.APPROVED,
    Escalation.OnTimeout.REJECT: Escalation.Status.REJECTED,
    Escalation.OnTimeout.EXPIRE: Escalation.Status.EXPIRED,
}


def timers_due(now: datetime | None = None, *, batch: int = 1000) -> int:
    """Run every timer that is due; returns how many escalations it acted on.

    Rows are claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` so any number of tickers (beat on
    several hosts, an in-process ticker) can run at once: each due row is handled by one of them,
    the step is re-derived from the row under its lock, and a lost or duplicated tick is harmless.
    Escalations past their deadline, the bulk of any large sweep, are decided set-wise: one
    UPDATE per outcome, their audit events and outbox rows in one INSERT each, per batch.
    """
    now = now or timezone.now()
    handled = 0
    while True:
        with transaction.atomic(), audit_batch():
            due = list(
                Escalation.objects.select_for_update(skip_locked=True)
                .filter(status=Escalation.Status.PENDING, next_action_at__lte=now)
                .order_by("next_action_at")[:batch]
            )
            metrics.timers_acted(
                [e.next_action_at for e in due if e.next_action_at is not None], now
            )
            _expire_many([escalation for escalation in due if escalation.expires_at <= now], now)
            for escalation in due:
                if escalation.expires_at > now:
                    _timer_step(escalation, now)
        handled += len(due)
        if len(due) < batch:
            return handled


def _expire_many(escalations: list[Escalation], now: datetime) -> None:
    """Apply ``on_timeout`` to locked, pending escalations past their deadline, set-wise."""
    if not escalations:
        return
    by_outcome: dict[str, list[Escalation]] = {}
    for escalation in escalations:
        by_outcome.setdefault(escalation.on_timeout, []).append(escalation)
    for on_timeout, group in by_outcome.items():
        decided_by = {"type": "timeout", "on_timeout": on_timeout}
        status = _TIMEOUT_STATUS[on_timeout]
        Escalation.objects.filter(pk__in=[escalation.pk for escalation in group]).update(
            status=status,
            decided_at=now,
            decided_by=decided_by,
            decision_response=None,
            decision_comment="",
            edited_arguments=None,
            decision_channel="",
            receipt="",
            next_action_at=None,
            assignee=None,
            claimed_at=None,
            timer_generation=F("timer_generation") + 1,
        )
        for escalation in group:
            decision_audited(escalation, status=status, decided_by=decided_by)
        if status == Escalation.Status.APPROVED:
            _receipts_sign(group, decided_by=decided_by, now=now)
    outbox_write_many(
        [
            (escalation.pk, "expired", {"generation": escalation.timer_generation + 1})
            for escalation in escalations
        ]
    )
    public_ids = [escalation.public_id for escalation in escalations]
    transaction.on_commit(functools.partial(wakeups.publish_many, public_ids))


def _receipts_sign(group: list[Escalation], *, decided_by: dict[str, Any], now: datetime) -> None:
    """Sign and store the receipts of escalations just approved on timeout (one per row, so a
    second UPDATE; approving on timeout is rare, the loaded rows are only brought up to date)."""
    prefetch_related_objects(group, "organization")
    for escalation in group:
        escalation.status = Escalation.Status.APPROVED
        escalation.decided_at = now
        escalation.decided_by = decided_by
        escalation.edited_arguments = None
        escalation.receipt = receipt_sign(escalation)
    Escalation.objects.bulk_update(group, ["receipt"])


def policy_levels(escalation: Escalation) -> list[dict[str, Any]]:
    return (escalation.policy_snapshot or {}).get("levels") or []


def _warning_lead(escalation: Escalation) -> timedelta:
    """Warn a tenth of the timeout before the deadline, at most 15 minutes before."""
    return timedelta(seconds=min(900, escalation.timeout_seconds // 10))


def _has_next_level(escalation: Escalation) -> bool:
    repeat = (escalation.policy_snapshot or {}).get("repeat", 0)
    return (
        escalation.current_level < len(policy_levels(escalation))
        or escalation.current_round < repeat
    )


def next_timer(escalation: Escalation) -> datetime:
    """The earliest moment something must happen: deadline, warning, next level or reminder."""
    candidates = [escalation.expires_at]
    lead = _warning_lead(escalation)
    if not escalation.deadline_warned and lead.total_seconds() >= 1:
        candidates.append(escalation.expires_at - lead)
    levels = policy_levels(escalation)
    if levels and escalation.level_entered_at is not None:
        level = levels[escalation.current_level - 1]
        if _has_next_level(escalation):
            candidates.append(
                escalation.level_entered_at + timedelta(seconds=level["wait_seconds"])
            )
        if level.get("reminder_seconds"):
            since = escalation.last_reminder_at or escalation.level_entered_at
            candidates.append(since + timedelta(seconds=level["reminder_seconds"]))
    return min(candidates)


def _enter_level(escalation: Escalation, *, level: int, round_: int, now: datetime) -> None:
    escalation.current_level = level
    escalation.current_round = round_
    escalation.level_entered_at = now
    escalation.last_reminder_at = None
    escalation.timer_generation += 1
    escalation.save(
        update_fields=[
            "current_level",
            "current_round",
            "level_entered_at",
            "last_reminder_at",
            "timer_generation",
        ]
    )
    level_entered(escalation)


def level_entered(escalation: Escalation) -> None:
    """Record that the escalation is now at its current level, and owe its effects (outbox)."""
    level, round_ = escalation.current_level, escalation.current_round
    snapshot_level = policy_levels(escalation)[level - 1]
    audit_record(
        organization_id=escalation.organization_id,
        action="escalation.level_entered",
        actor=SYSTEM_ACTOR,
        target=escalation.public_id,
        data={
            "level": level,
            "round": round_,
            "targets": snapshot_level["targets"],
            "channels": snapshot_level["channels"],
        },
    )
    after_commit(
        escalation,
        "level_entered" if (level, round_) == (1, 0) else "escalated",
        {"level": level, "round": round_},
    )


def _timer_step(escalation: Escalation, now: datetime) -> None:
    """Do what is due for one locked, pending escalation, then set its next timer."""
    if escalation.expires_at <= now:
        escalation.timer_generation += 1
        decide(
            escalation,
            status=_TIMEOUT_STATUS[escalation.on_timeout],
            decided_by={"type": "timeout", "on_timeout": escalation.on_timeout},
            now=now,
        )
        after_commit(escalation, "expired")
        return

    levels = policy_levels(escalation)
    if levels and escalation.level_entered_at is not None and _has_next_level(escalation):
        wait = timedelta(seconds=levels[escalation.current_level - 1]["wait_seconds"])
        if now >= escalation.level_entered_at + wait:
            if escalation.current_level < len(levels):
                _enter_level(
                    escalation,
                    level=escalation.current_level + 1,
                    round_=escalation.current_round,
                    now=now,
                )
            else:
                _enter_level(escalation, level=1, round_=escalation.current_round + 1, now=now)

    if levels and escalation.level_entered_at is not None:
        reminder = levels[escalation.current_level - 1].get("reminder_seconds")
        since = escalation.last_reminder_at or escalation.level_entered_at
        if reminder and now >= since + timedelta(seconds=reminder):
            escalation.last_reminder_at = now
            escalation.timer_generation += 1
            audit_record(
                organization_id=escalation.organization_id,
                action="escalation.reminded",
                actor=SYSTEM_ACTOR,
                target=escalation.public_id,
                data={"level": escalation.current_level, "round": escalation.current_round},
            )
            after_commit(escalation, "reminder", {"level": escalation.current_level})

    lead = _warning_lead(escalation)
    if (
        not escalation.deadline_warned
        and lead.total_seconds() >= 1
        and now >= escalation.expires_at - lead
    ):
        escalation.deadline_warned = True
        escalation.timer_generation += 1
        audit_record(
            organization_id=escalation.organization_id,
            action="escalation.deadline_warning",
            actor=SYSTEM_ACTOR,
            target=escalation.public_id,
            data={"expires_at": escalation.expires_at.isoformat()},
        )
        after_commit(escalation, "deadline_warning")

    escalation.next_action_at = next_timer(escalation)
    escalation.save(
        update_fields=["next_action_at", "last_reminder_at", "deadline_warned", "timer_generation"]
    )
