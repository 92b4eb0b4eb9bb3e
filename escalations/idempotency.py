"""``Idempotency-Key`` for creates: retries are safe and never make two rows.

* same key + same body → the first response again, with ``Idempotent-Replayed: true``;
* same key + another body → 422;
* same key while the first request is still running → 409 (retry shortly);
* records are scoped to the organization and kept 24 hours.

The record is inserted (and committed) *before* the work starts, so the unique constraint is the
lock: of 20 concurrent requests with one key exactly one proceeds. The response is written into
the record in the same transaction as the escalation, so a replay can never point at a rollback.
A request that fails validation removes its record (nothing was done, so nothing is replayed);
a record left in flight by a crashed process is taken over after ``STALE_AFTER``.

``idempotent`` runs the whole protocol around a piece of work; a view only says what the work is
and turns the outcome into its response.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from awaithuman.problems import ApiProblem
from tenants.models import Organization

from .models import IdempotencyRecord

MAX_KEY_LENGTH = 255
_PRINTABLE_ASCII = re.compile(r"[ -~]+")
STALE_AFTER = timedelta(seconds=60)


@dataclass(frozen=True)
class Replay:
    status: int
    body: Any


@dataclass(frozen=True)
class Outcome:
    """What to answer: the work's status and body, or the first request's (``replayed``)."""

    status: int
    body: Any
    replayed: bool = False


def idempotent(
    *,
    organization: Organization,
    key: str | None,
    method: str,
    path: str,
    body: Any,
    work: Callable[[], tuple[int, Any]],
) -> Outcome:
    """Run ``work`` (returning its status and JSON body) at most once for ``key``.

    Without a key the work just runs. With one, a retry of the same request gets the first
    outcome back, and the problems of ``idempotency_begin`` say why else it cannot run. The work
    and the stored outcome commit together; if the work fails, the key is freed for a retry.
    """
    if key is None:
        status, response_body = work()
        return Outcome(status=status, body=response_body)
    reserved = idempotency_begin(
        organization=organization, key=key, fingerprint=fingerprint(method, path, body)
    )
    if isinstance(reserved, Replay):
        return Outcome(status=reserved.status, body=reserved.body, replayed=True)
    try:
        with transaction.atomic():
            status, response_body = work()
            idempotency_complete(record=reserved, status=status, body=response_body)
    except BaseException:
        idempotency_abandon(reserved)
        raise
    return Outcome(status=status, body=response_body)


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def check_key(key: str) -> None:
    if len(key) > MAX_KEY_LENGTH or not _PRINTABLE_ASCII.fullmatch(key):
        raise ApiProblem(
            status_code=400,
            type_slug="invalid-idempotency-key",
            detail=f"Idempotency-Key must be 1–{MAX_KEY_LENGTH} printable ASCII characters.",
            errors={"Idempotency-Key": ["must be 1–255 printable ASCII characters"]},
        )


def idempotency_begin(
    *, organization: Organization, key: str, fingerprint: str
) -> IdempotencyRecord | Replay:
    """Reserve ``key`` for this request, or say what to answer instead."""
    check_key(key)
    now = timezone.now()
    for _ in range(3):
        try:
            with transaction.atomic():
                return IdempotencyRecord.objects.create(
                    organization=organization, key=key, fingerprint=fingerprint, created_at=now
                )
        except IntegrityError:
            existing = IdempotencyRecord.objects.filter(organization=organization, key=key).first()
        if existing is None:
            continue  # finished and purged between our insert and our read: try again
        expired = existing.created_at < now - timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
        abandoned = existing.response_status is None and existing.created_at < now - STALE_AFTER
        if expired or abandoned:
            IdempotencyRecord.objects.filter(
                pk=existing.pk, created_at=existing.created_at
            ).delete()
            continue
        if existing.fingerprint != fingerprint:
            raise ApiProblem(
                status_code=422,
                type_slug="idempotency-key-reused",
                detail=(
                    "This Idempotency-Key was already used with a different request body; "
                    "use a new key for a new request."
                ),
            )
        if existing.response_status is None:
            raise ApiProblem(
                status_code=409,
                type_slug="idempotency-in-flight",
                detail=(
                    "A request with this Idempotency-Key is still being processed; retry shortly."
                ),
                headers={"Retry-After": "1"},
            )
        assert existing.response_body is not None  # saved together with response_status
        return Replay(status=existing.response_status, body=json.loads(existing.response_body))
    raise ApiProblem(
        status_code=409,
        type_slug="idempotency-in-flight",
        detail="This Idempotency-Key is contended; retry shortly.",
        headers={"Retry-After": "1"},
    )


def idempotency_complete(*, record: IdempotencyRecord, status: int, body: Any) -> None:
    """Store the response; call inside the transaction that did the work.

    The body is kept as its JSON text (a JSON string): PostgreSQL's jsonb would reorder the keys
    of a stored object, and a replay must be the first response's bytes, not an equal document.
    """
    record.response_status = status
    record.response_body = json.dumps(body)
    record.save(update_fields=["response_status", "response_body"])


def idempotency_abandon(record: IdempotencyRecord) -> None:
    IdempotencyRecord.objects.filter(pk=record.pk, response_status__isnull=True).delete()


def idempotency_purge() -> int:
    cutoff = timezone.now() - timedelta(seconds=settings.IDEMPOTENCY_TTL_SECONDS)
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
