"""Evidence bundles: one ZIP an auditor checks on their own machine, with no access to ours.

For an organization and a date range (on escalation creation time), the bundle holds::

    README.txt            what is inside and how to check it
    manifest.json         organization, range, counts, the checkpoint it is anchored to
    escalations.jsonl     each escalation of the range: full context, action, every response,
                          the decision and, for an approval, its signed receipt
    audit/events.jsonl    the audit events from the first one of the range up to the checkpoint,
                          every field the hash covers plus prev_hash and hash
    audit/checkpoints.txt the signed checkpoints inside that segment, newest last, separated by
                          a line "----"
    jwks.json             every public key that signed them (retired keys included)

How it proves itself: the last checkpoint signs the hash of the last event of the segment; each
event's hash covers the previous one's, so every event of the segment is fixed by that one
signature. Each escalation's ``escalation.created`` event carries the SHA-256 digest of its
context (``context_digest``) and its action, and ``escalation.decided`` its outcome and edits, so
a changed byte in an escalation shows against the chain. ``awaithuman-verify bundle.zip`` (the
SDK, no Django) recomputes all of it.

Streaming: ``zipfile`` writes onto a sink that the generator empties after every line, entries
use data descriptors (no seeking back) and ZIP64, and rows are read in chunks: memory stays flat
however large the range.
"""

from __future__ import annotations

import gc
import json
import zipfile
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Min
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from audit.checkpoints import checkpoint_issue
from audit.models import AuditEvent, Checkpoint
from audit.services import event_body
from tenants.models import Organization

from .exports import ExportError, parse_moment
from .models import Escalation, ReceiptSigningKey
from .receipts import ALGORITHM, approved_action, receipt_for
from .streaming import streaming_response

FORMAT_VERSION = 1
CHUNK = 1000
CHECKPOINT_SEPARATOR = "----\n"

README = """AwaitHuman evidence bundle
==========================

Organization: {organization} ({organization_id})
Escalations created from {since} to {until} (UTC, end exclusive): {escalations}
Audit events: seq {first_seq} to {last_seq}, anchored to the signed checkpoint at seq {last_seq}

Files
  manifest.json          what this bundle covers
  escalations.jsonl      one escalation per line: context, action, responses, decision, receipt
  audit/events.jsonl     one audit event per line, in seq order, with prev_hash and hash
  audit/checkpoints.txt  signed checkpoints (C2SP signed notes), separated by "----" lines
  jwks.json              the Ed25519 public keys that signed the checkpoints and receipts

Check it (on any machine, no account needed)
  pip install 'awaithuman-sdk[receipts]'
  awaithuman-verify {filename}

The verifier recomputes every audit hash and link, checks the checkpoint signatures against
jwks.json and that the last checkpoint signs the last event, checks each escalation against its
audit events (context digest, action, outcome, edits) and each receipt's signature and action
hash. It prints PASS, or FAIL with the first problem it found and the event it concerns.

What this proves: these events and escalations are exactly those the service recorded up to the
checkpoint, unchanged since. Compare the last checkpoint with a copy kept outside the service
(your webhook receiver's, an auditor's): if they match, the history was not rewritten since.
"""


class _Sink:
    """A write-only file for ``zipfile`` that the generator empties as it goes."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        """``zipfile`` flushes; nothing is buffered here beyond ``chunks``."""

    def close(self) -> None:
        """Part of the file protocol; ``zipfile`` never closes a file object it was given."""

    def drain(self) -> bytes:
        data = b"".join(self.chunks)
        self.chunks.clear()
        return data


def _line(value: Any) -> bytes:
    return (
        json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        + b"\n"
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _escalation_lines(escalations: Iterable[Escalation]) -> Iterator[bytes]:
    for number, escalation in enumerate(escalations, start=1):
        if number % CHUNK == 0:
            # Prefetching makes reference cycles (an escalation's response cache, each
            # response's escalation), which only the cyclic collector frees; left to its own
            # schedule, several chunks' worth pile up before it runs.
            gc.collect()
        yield _line(
            {
                "id": escalation.public_id,
                "agent": {"id": escalation.agent.public_id, "name": escalation.agent.name},
                "kind": escalation.kind,
                "status": escalation.status,
                "title": escalation.title,
                "action": escalation.action,
                "context": escalation.context,
                "response_schema": escalation.response_schema,
                "metadata": escalation.metadata,
                "external_id": escalation.external_id,
                "created_at": _iso(escalation.created_at),
                "redacted_at": _iso(escalation.redacted_at),
                "redaction_reason": escalation.redaction_reason,
                "responses": [
                    {
                        "id": response.public_id,
                        "by": response.membership.as_actor(),
                        "outcome": response.outcome,
                        "payload": response.payload,
                        "comment": response.comment,
                        "edited_arguments": response.edited_arguments,
                        "channel": response.channel,
                        "at": _iso(response.created_at),
                    }
                    for response in escalation.responses.all()
                ],
                "decision": None
                if escalation.decided_at is None
                else {
                    "outcome": escalation.status,
                    "response": escalation.decision_response,
                    "comment": escalation.decision_comment,
                    "edited_arguments": escalation.edited_arguments,
                    "approved_action": approved_action(escalation)
                    if escalation.status == Escalation.Status.APPROVED
                    else None,
                    "decided_by": escalation.decided_by,
                    "decided_at": _iso(escalation.decided_at),
                    "channel": escalation.decision_channel,
                    "receipt": receipt_for(escalation),
                },
            }
        )


def _event_lines(events: Iterable[AuditEvent]) -> Iterator[bytes]:
    for event in events:
        yield _line({**event_body(event), "prev_hash": event.prev_hash, "hash": event.hash})


def _checkpoint_notes(checkpoints: Iterable[Checkpoint]) -> Iterator[bytes]:
    for index, checkpoint in enumerate(checkpoints):
        separator = CHECKPOINT_SEPARATOR if index else ""
        yield (separator + checkpoint.note).encode("utf-8")


def _jwks() -> dict[str, Any]:
    return {
        "keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": key.public_key, "kid": key.kid, "alg": ALGORITHM}
            for key in ReceiptSigningKey.objects.order_by("created_at", "id")
        ]
    }


def bundle_range(values: dict[str, str]) -> tuple[datetime, datetime]:
    """``since`` and ``until`` (ISO dates or date-times, both required, ``since`` first) from
    query parameters or options; ``ExportError`` naming each bad field."""
    errors: dict[str, list[str]] = {}
    bounds: dict[str, datetime] = {}
    for name in ("since", "until"):
        raw = values.get(name) or ""
        moment = parse_moment(raw) if raw else None
        if moment is None:
            errors[name] = [
                "Required: an ISO 8601 date or date-time."
                if not raw
                else "Must be an ISO 8601 date or date-time."
            ]
        else:
            bounds[name] = moment
    if not errors and bounds["since"] >= bounds["until"]:
        errors["until"] = ["Must be after since."]
    if errors:
        raise ExportError(errors)
    return bounds["since"], bounds["until"]


def bundle_filename(organization: Organization, since: datetime, until: datetime) -> str:
    return f"{organization.slug}-evidence-{since:%Y%m%d}-{until:%Y%m%d}.zip"


def bundle_stream(
    *, organization: Organization, since: datetime, until: datetime
) -> Iterator[bytes]:
    """The evidence bundle of escalations created in ``[since, until)``, as ZIP bytes in pieces.

    Signs a checkpoint at the current chain head first (or reuses the one already there), so the
    bundle's events end at a signed statement.
    """
    checkpoint, _ = checkpoint_issue(organization_id=organization.pk)
    escalations = (
        Escalation.objects.filter(
            organization=organization, created_at__gte=since, created_at__lt=until
        )
        .select_related("agent")
        .prefetch_related("responses__membership__user")
        .order_by("created_at", "id")
    )
    events = AuditEvent.objects.filter(organization_id=organization.pk, seq__isnull=False)
    first_seq = (
        events.filter(created_at__gte=since).aggregate(first=Min("seq"))["first"] or checkpoint.seq
    )
    segment = events.filter(seq__gte=first_seq, seq__lte=checkpoint.seq).order_by("seq")
    checkpoints = Checkpoint.objects.filter(
        organization_id=organization.pk, seq__gte=first_seq, seq__lte=checkpoint.seq
    ).order_by("seq")
    count = escalations.count()
    manifest = {
        "format": FORMAT_VERSION,
        "organization": {"id": organization.public_id, "name": organization.name},
        "range": {"since": _iso(since), "until": _iso(until), "on": "escalation created_at"},
        "escalations": count,
        "audit": {
            "first_seq": first_seq,
            "last_seq": checkpoint.seq,
            "checkpoint": checkpoint.note,
        },
        "issuer": settings.AWAITHUMAN_BASE_URL,
        "generated_at": _iso(timezone.now()),
    }
    readme = README.format(
        organization=organization.name,
        organization_id=organization.public_id,
        since=_iso(since),
        until=_iso(until),
        escalations=count,
        first_seq=first_seq,
        last_seq=checkpoint.seq,
        filename=bundle_filename(organization, since, until),
    )
    entries: list[tuple[str, Iterable[bytes]]] = [
        ("README.txt", [readme.encode("utf-8")]),
        ("manifest.json", [json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")]),
        ("jwks.json", [json.dumps(_jwks(), indent=2).encode("utf-8")]),
        ("audit/checkpoints.txt", _checkpoint_notes(checkpoints.iterator(chunk_size=CHUNK))),
        ("audit/events.jsonl", _event_lines(segment.iterator(chunk_size=CHUNK))),
        ("escalations.jsonl", _escalation_lines(escalations.iterator(chunk_size=CHUNK))),
    ]
    sink = _Sink()
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, pieces in entries:
            with archive.open(name, mode="w", force_zip64=True) as entry:
                for piece in pieces:
                    entry.write(piece)
                    if sink.chunks:
                        yield sink.drain()
    yield sink.drain()


def bundle_response(
    request: HttpRequest, organization: Organization, since: datetime, until: datetime
) -> StreamingHttpResponse:
    """The streamed ZIP download, for the API and the console alike."""
    return streaming_response(
        request,
        bundle_stream(organization=organization, since=since, until=until),
        content_type="application/zip",
        filename=bundle_filename(organization, since, until),
    )
