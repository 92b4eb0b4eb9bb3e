"""The organization's history: every escalation, filtered, searched, paged and exported.

One parser (``HistoryFilters.parse``) for the API's query string and the console's GET form, one
queryset builder (``history_queryset``), one keyset pager (``history_page``) and one streamed
export (``export_chunks``), so a shared console URL, an API call and a download all mean the
same rows. Every query starts from the organization: another organization's escalations are never
listed, counted or exported.

Full-text search (``q``) covers the title, ``context.reasoning``, the action's name and arguments
and the decision comment:

- PostgreSQL: ``search_document``, a stored generated ``tsvector`` column (English stemming,
  title weighted first) with a GIN index, added by migration 0007 and kept current by the
  database itself; ``q`` is read by ``websearch_to_tsquery`` (``"a phrase"``, ``or``, ``-word``);
- SQLite with FTS5: the ``escalations_escalation_fts`` table (Porter stemming), kept current by
  triggers; every word of ``q`` must match;
- SQLite without FTS5: every word of ``q`` must appear (case-insensitive substring) in one of the
  fields.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.conf import settings
from django.contrib.postgres.search import SearchQuery, SearchVectorField
from django.core import signing
from django.db import connections
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL
from django.urls import reverse

from tenants.models import Organization

from .exports import ExportError, parse_moment
from .models import Escalation

PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
EXPORT_CHUNK = 1000
MAX_QUERY_CHARS = 200
MAX_ID_CHARS = 32  # agt_…, pol_…
MAX_EXTERNAL_ID_CHARS = 200
FTS_TABLE = "escalations_escalation_fts"
DECIDED_BY_KINDS = {"human": "user", "policy": "policy", "timeout": "timeout", "agent": "agent"}
DECIDED_BY_PATTERN = rf"^({'|'.join(DECIDED_BY_KINDS)}|mem_[0-9A-Za-z]{{1,28}})$"
# Where a decision was made: the console, the API, or a notification channel's answer.
CHANNELS = ("console", "api", "email", "sms", "whatsapp", "telegram", "slack", "push")
_CURSOR_SALT = "escalations.history.cursor"
_WORDS = re.compile(r"\w+")
_DOCUMENT_COLUMN = '"escalations_escalation"."search_document"'
_FTS_ROWIDS = f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH %s"  # noqa: S608


class HistoryError(ExportError):
    """Bad history parameters: ``errors`` maps each field to its messages."""


@dataclass(frozen=True)
class HistoryFilters:
    """What to show. Each field is optional; the ``*_before`` bounds are exclusive, a bare date
    is midnight UTC."""

    status: str = ""
    kind: str = ""
    priority: str = ""
    agent: str | None = None  # agt_… (blank: matches nothing, as the list always did)
    policy: str = ""  # pol_…, the policy that matched (its snapshot)
    decided_by: str = ""  # human | policy | timeout | agent | a member's mem_… id
    channel: str = ""  # decision_channel
    external_id: str | None = None  # blank: the escalations created without one
    created_after: datetime | None = None
    created_before: datetime | None = None
    decided_after: datetime | None = None
    decided_before: datetime | None = None
    q: str = ""

    @classmethod
    def parse(
        cls, values: Mapping[str, str], *, extra: tuple[str, ...] = (), blank_is_absent: bool
    ) -> HistoryFilters:
        """Filters from a query string; ``HistoryError`` naming every bad field, an unknown
        parameter included (``extra`` names the caller's own, such as ``cursor``).
        ``blank_is_absent``: a form leaves fields empty; the API calls ``?status=`` a mistake."""
        errors: dict[str, list[str]] = {}
        for name in sorted(set(values) - set(FILTERS) - set(extra)):
            errors[name] = ["Unknown query parameter."]
        given = {
            name: value
            for name, value in values.items()
            if name in FILTERS and not (blank_is_absent and value.strip() == "")
        }
        parsed: dict[str, Any] = {}
        for name, value in given.items():
            try:
                parsed[name] = _PARSERS[name](value)
            except ValueError as exc:
                errors[name] = [str(exc)]
        if errors:
            raise HistoryError(errors)
        return cls(**parsed)


def _choice(choices: Iterable[tuple[str, str]]) -> Callable[[str], str]:
    allowed = [value for value, _ in choices]

    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"Must be one of: {', '.join(allowed)}.")
        return value

    return parse


def _text(max_length: int, *, blank: bool) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not blank and not value.strip():
            raise ValueError("May not be blank.")
        if len(value) > max_length:
            raise ValueError(f"At most {max_length} characters.")
        if "\x00" in value:
            # PostgreSQL refuses NUL in a parameter: a 500 if it got that far.
            raise ValueError("Null characters are not allowed.")
        return value

    return parse


def _moment(value: str) -> datetime:
    moment = parse_moment(value)
    if moment is None:
        raise ValueError("Must be an ISO 8601 date or date-time.")
    return moment


def _decided_by(value: str) -> str:
    if re.fullmatch(DECIDED_BY_PATTERN, value):
        return value
    raise ValueError("Must be human, policy, timeout, agent or a member's id (mem_…).")


_PARSERS: dict[str, Callable[[str], Any]] = {
    "status": _choice(Escalation.Status.choices),
    "kind": _choice(Escalation.Kind.choices),
    "priority": _choice(Escalation.Priority.choices),
    "agent": _text(MAX_ID_CHARS, blank=True),
    "policy": _text(MAX_ID_CHARS, blank=False),
    "decided_by": _decided_by,
    "channel": _choice([(channel, channel) for channel in CHANNELS]),
    "external_id": _text(MAX_EXTERNAL_ID_CHARS, blank=True),
    "created_after": _moment,
    "created_before": _moment,
    "decided_after": _moment,
    "decided_before": _moment,
    "q": _text(MAX_QUERY_CHARS, blank=False),
}
FILTERS = tuple(_PARSERS)


# --- The queryset --------------------------------------------------------------------------------


def history_queryset(organization: Organization, filters: HistoryFilters) -> QuerySet[Escalation]:
    """The organization's escalations matching ``filters``, newest first (``-created_at``,
    ``-id``)."""
    escalations = Escalation.objects.filter(organization=organization)
    exact = {
        "status": filters.status,
        "kind": filters.kind,
        "priority": filters.priority,
        "policy_snapshot__id": filters.policy,
        "decision_channel": filters.channel,
    }
    escalations = escalations.filter(**{name: value for name, value in exact.items() if value})
    if filters.agent is not None:
        escalations = escalations.filter(agent__public_id=filters.agent)
    if filters.external_id is not None:
        escalations = escalations.filter(external_id=filters.external_id)
    if filters.decided_by in DECIDED_BY_KINDS:
        escalations = escalations.filter(decided_by__type=DECIDED_BY_KINDS[filters.decided_by])
    elif filters.decided_by:
        escalations = escalations.filter(decided_by__type="user", decided_by__id=filters.decided_by)
    bounds = {
        "created_at__gte": filters.created_after,
        "created_at__lt": filters.created_before,
        "decided_at__gte": filters.decided_after,
        "decided_at__lt": filters.decided_before,
    }
    escalations = escalations.filter(
        **{name: value for name, value in bounds.items() if value is not None}
    )
    if filters.q.strip():
        escalations = _search(escalations, filters.q)
    return escalations.order_by("-created_at", "-id")


def _search(escalations: QuerySet[Escalation], q: str) -> QuerySet[Escalation]:
    connection = connections[escalations.db]
    if connection.vendor == "postgresql":
        # Constant SQL, no input: the generated column is not a model field (SQLite has none).
        document = RawSQL(_DOCUMENT_COLUMN, [], output_field=SearchVectorField())  # noqa: S611
        return escalations.alias(search_document=document).filter(
            search_document=SearchQuery(q, config="english", search_type="websearch")
        )
    words = _WORDS.findall(q)
    if not words:
        return escalations.none()
    if connection.vendor == "sqlite" and _fts5_ready(escalations.db):
        # Each word quoted: FTS5's own syntax (NEAR, column filters, *) stays out of user input.
        match = " ".join('"{}"'.format(word.replace('"', '""')) for word in words)
        rowids = RawSQL(_FTS_ROWIDS, [match])  # noqa: S611 (constant SQL, q is a parameter)
        return escalations.filter(pk__in=rowids)
    for word in words:
        escalations = escalations.filter(
            Q(title__icontains=word)
            | Q(context__reasoning__icontains=word)
            | Q(action__name__icontains=word)
            | Q(action__arguments__icontains=word)
            | Q(decision_comment__icontains=word)
        )
    return escalations


@cache
def _fts5_ready(alias: str) -> bool:
    """Whether migration 0007 could create the FTS5 table (SQLite built without FTS5: no)."""
    with connections[alias].cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = %s", [FTS_TABLE]
        )
        return cursor.fetchone() is not None


def escalation_links(organization: Organization, targets: list[str]) -> dict[str, tuple[str, str]]:
    """The audit log's escalation targets (``esc_…``) of this organization: title and console
    page. One query for the page of events; another organization's ids stay unnamed."""
    ids = [target for target in targets if target.startswith("esc_")]
    rows = Escalation.objects.filter(organization=organization, public_id__in=ids).values_list(
        "public_id", "title"
    )
    return {
        public_id: (title, reverse("queue:escalation", args=[public_id]))
        for public_id, title in rows
    }


# --- Keyset pages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    escalations: list[Escalation]
    next_cursor: str | None
    previous_cursor: str | None


def _cursor(direction: str, escalation: Escalation) -> str:
    return signing.dumps(
        [direction, escalation.created_at.isoformat(), escalation.pk], salt=_CURSOR_SALT
    )


def _position(cursor: str) -> tuple[str, datetime, int]:
    """Where a cursor points; ``HistoryError`` naming ``cursor`` for anything this module did not
    sign (a cursor is opaque: signed, so that a forged one is refused rather than obeyed)."""
    try:
        direction, moment, pk = signing.loads(cursor, salt=_CURSOR_SALT)
        created_at = datetime.fromisoformat(moment)
        if direction not in ("next", "previous") or not isinstance(pk, int):
            raise ValueError(direction)
    except (signing.BadSignature, ValueError, TypeError):
        raise HistoryError(
            {"cursor": ["Not a cursor this server returned; list again without it."]}
        ) from None
    return direction, created_at, pk


def _older_than(created_at: datetime, pk: int) -> Q:
    # The first term is a range the (organization, -created_at, -id) index can start from.
    return Q(created_at__lte=created_at) & (Q(created_at__lt=created_at) | Q(id__lt=pk))


def _newer_than(created_at: datetime, pk: int) -> Q:
    return Q(created_at__gte=created_at) & (Q(created_at__gt=created_at) | Q(id__gt=pk))


def history_page(
    escalations: QuerySet[Escalation], *, cursor: str | None, limit: int = PAGE_SIZE
) -> Page:
    """One page of ``history_queryset``'s rows: the first (no cursor, or a blank one, as a form
    or a client filling in an empty ``next`` sends), or the one a cursor points to. Keyset (never
    an offset), so rows arriving meanwhile neither repeat nor vanish from the pages after."""
    if not cursor:
        rows = list(escalations[: limit + 1])
        return Page(
            rows[:limit], _cursor("next", rows[limit - 1]) if len(rows) > limit else None, None
        )
    direction, created_at, pk = _position(cursor)
    if direction == "next":
        rows = list(escalations.filter(_older_than(created_at, pk))[: limit + 1])
        page = rows[:limit]
        more_after = len(rows) > limit
        more_before = True
    else:
        rows = list(
            escalations.filter(_newer_than(created_at, pk)).order_by("created_at", "id")[
                : limit + 1
            ]
        )
        page = rows[:limit][::-1]
        more_before = len(rows) > limit
        more_after = True
    return Page(
        page,
        _cursor("next", page[-1]) if page and more_after else None,
        _cursor("previous", page[0]) if page and more_before else None,
    )


def page_limit(raw: str | None) -> int:
    """``limit`` from the query string; ``HistoryError`` naming it."""
    if raw is None:
        return PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise HistoryError({"limit": [f"Must be a whole number from 1 to {MAX_PAGE_SIZE}."]})
    return int(raw)


def export_chunks(escalations: QuerySet[Escalation]) -> Iterator[list[dict[str, Any]]]:
    """All of ``history_queryset``'s rows as ``EXPORT_FIELDS`` dicts (no model instances: they
    would cost most of a download's time), ``EXPORT_CHUNK`` at a time, each chunk a keyset query
    of its own: memory stays flat however many rows there are, and no server-side cursor (nor a
    transaction held open for the whole download) is needed."""
    values = escalations.values(*EXPORT_FIELDS)
    chunk = list(values[:EXPORT_CHUNK])
    while chunk:
        yield chunk
        if len(chunk) < EXPORT_CHUNK:
            return
        last = chunk[-1]
        chunk = list(values.filter(_older_than(last["created_at"], last["pk"]))[:EXPORT_CHUNK])


# --- Downloads -----------------------------------------------------------------------------------

EXPORT_FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
CSV_COLUMNS = (
    "id",
    "created_at",
    "kind",
    "status",
    "priority",
    "agent_id",
    "agent",
    "title",
    "reasoning",
    "action",
    "arguments",
    "policy_id",
    "policy",
    "decided_at",
    "decided_by",
    "decided_by_id",
    "decided_by_name",
    "channel",
    "comment",
    "response",
    "external_id",
    "url",
)
# A spreadsheet runs a cell that starts with one of these as a formula; agent text must not.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


# What a download reads; the columns left out (schemas, metadata, receipts) would cost JSON
# decoding for nothing.
EXPORT_FIELDS = (
    "pk",
    "public_id",
    "created_at",
    "kind",
    "status",
    "priority",
    "title",
    "action",
    "context",
    "policy_snapshot",
    "decided_at",
    "decided_by",
    "decision_channel",
    "decision_comment",
    "decision_response",
    "external_id",
    "agent__public_id",
    "agent__name",
)


def history_row(row: dict[str, Any], *, url: str) -> dict[str, Any]:
    """One escalation (an ``EXPORT_FIELDS`` dict) as a JSON Lines line: what the history shows,
    not the whole record. ``url`` is its console page."""
    action = row["action"] if isinstance(row["action"], dict) else None
    context = row["context"] if isinstance(row["context"], dict) else {}
    snapshot = row["policy_snapshot"] or {}
    return {
        "id": row["public_id"],
        "created_at": _iso(row["created_at"]),
        "kind": row["kind"],
        "status": row["status"],
        "priority": row["priority"],
        "agent": {"id": row["agent__public_id"], "name": row["agent__name"]},
        "title": row["title"],
        "reasoning": context.get("reasoning"),
        "action": {"name": action.get("name"), "arguments": action.get("arguments")}
        if action
        else None,
        "policy": {"id": snapshot.get("id"), "name": snapshot.get("name")} if snapshot else None,
        "decided_at": _iso(row["decided_at"]),
        "decided_by": row["decided_by"],
        "channel": row["decision_channel"],
        "comment": row["decision_comment"],
        "response": row["decision_response"],
        "external_id": row["external_id"],
        "url": url,
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _csv_cells(row: dict[str, Any]) -> list[str]:
    action = row["action"] or {}
    policy = row["policy"] or {}
    decided_by = row["decided_by"] or {}
    values = [
        row["id"],
        row["created_at"],
        row["kind"],
        row["status"],
        row["priority"],
        row["agent"]["id"],
        row["agent"]["name"],
        row["title"],
        row["reasoning"],
        action.get("name"),
        action.get("arguments"),
        policy.get("id"),
        policy.get("name"),
        row["decided_at"],
        decided_by.get("type"),
        decided_by.get("id"),
        decided_by.get("email") or decided_by.get("name"),
        row["channel"],
        row["comment"],
        row["response"],
        row["external_id"],
        row["url"],
    ]
    cells = []
    for value in values:
        if value is None:
            cell = ""
        elif isinstance(value, str):
            cell = value
        else:
            cell = json.dumps(value, ensure_ascii=False, sort_keys=True)
        cells.append("'" + cell if cell.startswith(_FORMULA_STARTS) else cell)
    return cells


class _Echo:
    """A file-like object whose ``write`` hands back the line: ``csv.writer`` formats, we
    stream."""

    def write(self, value: str) -> str:
        return value


def export_lines(escalations: QuerySet[Escalation], export_format: str) -> Iterator[bytes]:
    """The rows as CSV (a header, then one line per escalation) or JSON Lines, read
    ``EXPORT_CHUNK`` at a time."""
    if export_format not in EXPORT_FORMATS:
        raise HistoryError({"format": [f"Must be one of: {', '.join(EXPORT_FORMATS)}."]})
    writer = csv.writer(_Echo())
    if export_format == "csv":
        yield writer.writerow(CSV_COLUMNS).encode()
    # One reverse() for the download, not one per row.
    detail = settings.AWAITHUMAN_BASE_URL + reverse("queue:escalation", args=["ESCALATION_ID"])
    for chunk in export_chunks(escalations):
        for escalation in chunk:
            url = detail.replace("ESCALATION_ID", escalation["public_id"])
            row = history_row(escalation, url=url)
            if export_format == "csv":
                yield writer.writerow(_csv_cells(row)).encode()
            else:
                yield json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
