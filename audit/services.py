"""Writing and verifying the audit hash chains.

Each organization has its own chain of ``AuditEvent`` rows, ``seq`` = 1, 2, 3, … with no gaps.
The hash of an event is defined exactly as follows, so that anyone can recompute a chain from
``manage.py audit_export`` output without this code::

    body = {
        "organization_id": <int>,
        "seq": <int>,
        "action": <str>,
        "actor": <object>,
        "target": <str>,
        "data": <object>,
        "created_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ",  # UTC, always six fraction digits
    }
    canonical = json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")
    hash = hashlib.sha256(f"{prev_hash}\\n{seq}\\n".encode("ascii") + canonical).hexdigest()

``prev_hash`` is the previous event's ``hash`` (lowercase hex), or 64 ``"0"`` characters for the
first event (``GENESIS_HASH``).

What is hashed must equal what the database gives back, on SQLite (JSON text) and PostgreSQL
(``jsonb``) alike, or a later verify would fail on an event nobody touched. So ``actor`` and
``data`` are passed through a JSON round trip *before* hashing and saving: a value that is not
plain JSON (``Decimal``, ``datetime``, NaN, …) fails at write time with ``ValueError``; tuples
become lists and non-string keys become strings, as they would on the way back; and the two
floats that ``jsonb`` rewrites are rewritten here first — ``-0.0`` becomes ``0.0`` (``numeric``
has no negative zero) and a whole float of 1e16 or more becomes an ``int`` (``jsonb`` prints
``1e+16`` as ``10000000000000000``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from .models import GENESIS_HASH, AuditEvent, ChainHead

# The actor of what the system does by itself (timers, policies, retention, commands).
SYSTEM_ACTOR = {"type": "system"}

_FIELD_MAX_LENGTH = 64


def _parse_float(text: str) -> float | int:
    """Parse a JSON float the way a round trip through PostgreSQL ``jsonb`` would come back."""
    number = float(text)
    if number == 0:
        return 0.0
    if number.is_integer() and abs(number) >= 1e16:
        return int(number)
    return number


def _plain_json(name: str, value: Any) -> Any:
    """``value`` as it will read back from the database; ``ValueError`` if it is not plain JSON."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"audit event {name} must be plain JSON: {exc}") from exc
    return json.loads(text, parse_float=_parse_float)


def payload_digest(value: Any) -> str:
    """SHA-256 hex of the canonical JSON of ``value`` as the database will give it back.

    Audit events carry this digest of a payload (an escalation's context) rather than the payload
    itself: anyone holding the payload can prove it is the one recorded, and the payload can be
    shown elsewhere (an evidence bundle) without the chain having to hold it.
    """
    canonical = json.dumps(
        _plain_json("payload", value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")
    return hashlib.sha256(canonical).hexdigest()


def event_body(event: AuditEvent) -> dict[str, Any]:
    """The hashed fields of ``event`` as the JSON object defined in the module docstring."""
    return {
        "organization_id": event.organization_id,
        "seq": event.seq,
        "action": event.action,
        "actor": event.actor,
        "target": event.target,
        "data": event.data,
        "created_at": event.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }


def event_hash(event: AuditEvent) -> str:
    """Recompute ``event.hash`` from its ``prev_hash``, ``seq`` and body."""
    canonical = json.dumps(
        event_body(event),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")
    prefix = f"{event.prev_hash}\n{event.seq}\n".encode("ascii")
    return hashlib.sha256(prefix + canonical).hexdigest()


def audit_record(
    *,
    organization_id: int,
    action: str,
    actor: dict[str, Any],
    target: str = "",
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record one event of the organization, in the caller's transaction.

    Must run inside ``transaction.atomic()``: the event commits or rolls back with the change it
    records. It is inserted unsealed — no lock, no chain work on the writer's path, so writers of
    one organization never queue behind each other — and ``audit_seal`` gives it its ``seq`` and
    hash shortly after commit (the sealer registered with ``on_unsealed_commit`` is asked to
    arrange that). The returned event's ``seq`` and ``hash`` are therefore still ``None``.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError(
            "audit_record() must run inside transaction.atomic(), in the same transaction as "
            "the change it records"
        )
    if isinstance(organization_id, bool) or not isinstance(organization_id, int):
        raise TypeError(f"organization_id must be an int, not {type(organization_id).__name__}")
    if not action or len(action) > _FIELD_MAX_LENGTH:
        raise ValueError(f"audit action must be 1 to {_FIELD_MAX_LENGTH} characters: {action!r}")
    if len(target) > _FIELD_MAX_LENGTH:
        raise ValueError(f"audit target must be at most {_FIELD_MAX_LENGTH} characters")
    if not isinstance(actor, dict) or not isinstance(actor.get("type"), str):
        raise ValueError(f'audit actor must be an object with a "type": {actor!r}')
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"audit data must be an object, not {type(data).__name__}")

    event = AuditEvent(
        organization_id=organization_id,
        action=action,
        actor=_plain_json("actor", actor),
        target=target,
        data=_plain_json("data", data or {}),
        created_at=timezone.now(),
    )
    pending = _batch.get()
    if pending is not None:
        pending.append(event)
    else:
        _append([event])
    return event


_batch: ContextVar[list[AuditEvent] | None] = ContextVar("audit_batch", default=None)


@contextmanager
def audit_batch() -> Iterator[None]:
    """Write the block's events together, in one INSERT, when the block ends.

    Must sit inside the service's ``transaction.atomic()``; nothing is written if the block
    raises. Nested blocks join the outermost one.
    """
    if _batch.get() is not None:
        yield
        return
    events: list[AuditEvent] = []
    token = _batch.set(events)
    try:
        yield
    finally:
        _batch.reset(token)
    if events:
        _append(events)


_sealers: list[Callable[[], None]] = []


def on_unsealed_commit(sealer: Callable[[], None]) -> None:
    """Register ``sealer``, called inside every transaction that writes events: it should
    arrange for ``audit_seal`` to run once that transaction commits (``transaction.on_commit``).
    A higher app registers it in its ``AppConfig.ready``; without one, events are sealed by
    whoever runs ``audit_seal`` next."""
    if sealer not in _sealers:
        _sealers.append(sealer)


def _request_sealing() -> None:
    for sealer in list(_sealers):
        sealer()


def _append(events: list[AuditEvent]) -> None:
    AuditEvent.objects.bulk_create(events)
    _request_sealing()


SEAL_BATCH = 5000


def audit_seal(*, organization_id: int | None = None) -> int:
    """Seal every committed, unsealed event (of one organization, or of all); returns how many.

    Per organization, in one transaction: lock the chain head, take the unsealed events in
    insertion order, give each the next ``seq``, its ``prev_hash`` and ``hash``, and move the
    head. Sealers of one organization queue on the head's lock (they run off the request path),
    and the second one finds only what the first left. The hashes are computed from the events
    as read back from the database, exactly as ``audit_verify_chain`` will read them.
    """
    unsealed = AuditEvent.objects.filter(seq__isnull=True)
    if organization_id is not None:
        unsealed = unsealed.filter(organization_id=organization_id)
    organization_ids = sorted(set(unsealed.values_list("organization_id", flat=True)))
    return sum(_seal_organization(org_id) for org_id in organization_ids)


def _seal_organization(organization_id: int) -> int:
    sealed = 0
    while True:
        with transaction.atomic():
            ChainHead.objects.bulk_create(
                [ChainHead(organization_id=organization_id)], ignore_conflicts=True
            )
            head = ChainHead.objects.select_for_update().get(organization_id=organization_id)
            events = list(
                AuditEvent.objects.filter(
                    organization_id=organization_id, seq__isnull=True
                ).order_by("id")[:SEAL_BATCH]
            )
            for event in events:
                event.seq, event.prev_hash = head.seq + 1, head.hash
                event.hash = event_hash(event)
                head.seq, head.hash = event.seq, event.hash
            if events:
                # One prepared statement, many rows (psycopg pipelines them): much cheaper than
                # bulk_update's CASE WHEN … per column for thousands of events.
                with connection.cursor() as cursor:
                    cursor.executemany(
                        "UPDATE audit_auditevent SET seq = %s, prev_hash = %s, hash = %s"
                        " WHERE id = %s",
                        [(event.seq, event.prev_hash, event.hash, event.pk) for event in events],
                    )
                head.save(update_fields=["seq", "hash"])
        sealed += len(events)
        if len(events) < SEAL_BATCH:
            return sealed


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking one chain.

    ``events_checked`` counts the events found intact before the first broken one;
    ``first_broken`` is the ``seq`` of the first event that is missing, altered or out of place.
    """

    ok: bool
    events_checked: int
    first_broken: int | None = None
    reason: str = ""


def _broken(events_checked: int, seq: int, reason: str) -> VerifyResult:
    return VerifyResult(ok=False, events_checked=events_checked, first_broken=seq, reason=reason)


def audit_verify_chain(*, organization_id: int) -> VerifyResult:
    """Recompute every link of one organization's chain; stop at the first broken event.

    Checks that ``seq`` runs 1, 2, 3, … without gaps, that each ``prev_hash`` is the previous
    event's ``hash``, that each ``hash`` matches the event's content, and that the chain head
    names the last event — which catches events deleted from the end, or a tail rewritten with
    recomputed hashes, that the links alone cannot.

    Safe to run while writers append: the head is read first and only events up to it are
    checked. Events past it are either newer (committed together with a newer head) or were
    inserted behind ``audit_record``'s back; the last step tells the two apart.
    """
    head_seq, head_hash = ChainHead.objects.filter(organization_id=organization_id).values_list(
        "seq", "hash"
    ).first() or (0, GENESIS_HASH)
    events = AuditEvent.objects.filter(organization_id=organization_id)

    expected_seq, prev_hash = 1, GENESIS_HASH
    for event in events.filter(seq__lte=head_seq).order_by("seq").iterator(chunk_size=2000):
        assert event.seq is not None  # seq__lte leaves the unsealed events (seq NULL) out
        checked = expected_seq - 1
        if event.seq > expected_seq:
            return _broken(checked, expected_seq, f"missing (the next event is seq {event.seq})")
        if event.seq < expected_seq:
            return _broken(checked, event.seq, "seq out of range (sequences start at 1)")
        if event.prev_hash != prev_hash:
            return _broken(checked, event.seq, "prev_hash is not the previous event's hash")
        if event_hash(event) != event.hash:
            return _broken(
                checked, event.seq, "hash mismatch: the event changed after it was written"
            )
        expected_seq, prev_hash = expected_seq + 1, event.hash

    checked = expected_seq - 1
    if checked < head_seq:
        return _broken(checked, expected_seq, f"missing (the chain head is at seq {head_seq})")
    if head_seq and prev_hash != head_hash:
        return _broken(checked - 1, head_seq, "hash does not match the chain head")

    # A writer commits its event and the head together, so reading the highest seq *before* the
    # head means a legitimately newer event is always covered by the head read after it.
    last_seq = events.filter(seq__gt=head_seq).aggregate(last=Max("seq"))["last"]
    if last_seq is not None:
        current_head_seq = (
            ChainHead.objects.filter(organization_id=organization_id)
            .values_list("seq", flat=True)
            .first()
            or 0
        )
        if last_seq > current_head_seq:
            stray_seq = (
                events.filter(seq__gt=current_head_seq)
                .order_by("seq")
                .values_list("seq", flat=True)
            )[0]
            assert stray_seq is not None  # seq__gt leaves the unsealed events out
            return _broken(checked, stray_seq, "not recorded in the chain head")
    return VerifyResult(ok=True, events_checked=checked)
