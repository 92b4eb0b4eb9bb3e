"""The insights' per-day rollup: finished UTC days of decisions, pre-aggregated for the charts.

Reading a 30- or 90-day range from the escalations means reading one index entry per decision
(0.3 to 1.4 s at a million escalations, ``bench/RESULTS-insights.md``). Finished days do not
change, so ``insights_rollup`` counts them once, for every organization, into two small tables
that ``escalations.insights`` sums instead; today (the unfinished UTC day) and any day not
rolled up yet are still read live from the escalations, so no figure is ever missing.

- ``InsightDay``: one row per (organization, day, agent, action name, channel, status, decider)
  with the exact ``count`` and the sum of the times to decision. Counts and approval rates
  summed from it are exactly those of the live queries.
- ``InsightWait``: a person's decisions per (organization, day, channel, bucket) of a fixed
  log-scale histogram of the time to decision: bucket 0 holds waits under ``FLOOR_SECONDS``,
  bucket ``b >= 1`` holds ``[FLOOR_SECONDS * RATIO**(b-1), FLOOR_SECONDS * RATIO**b)``, with no
  upper bound. A percentile from it interpolates inside the bucket (geometrically), so it lies
  in the same bucket as the exact ``percentile_cont``'s neighbouring values: **within 5 %**
  (``RATIO - 1``) of the exact figure, or within 0.1 s for waits under 0.1 s.
- ``InsightRollupDay``: which days are rolled up, written in the same transaction as their rows,
  so that a reader sees a day either entirely from the rollup or entirely live.

Each run deletes and re-inserts the rows of the days it computes, for every organization, with
one ``INSERT … SELECT … GROUP BY`` per table, in one transaction: a rerun gives the same rows.
The periodic job (``CELERY_BEAT_SCHEDULE["insights-rollup"]``) computes the days of the last
``WINDOW_DAYS`` not rolled up yet and always recomputes the last ``RECOMPUTE_DAYS`` finished
days: ``decided_at`` is the time of the decision, but a decision stamped before midnight can
commit after that day was rolled up (a transaction in flight, a server whose clock is behind),
and it is counted at the next run. An older day changed later is recomputed by
``manage.py insights_rollup --since``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db import connection, models, transaction
from django.db.models import Case, Count, F, FloatField, Func, QuerySet, Sum, Value, When
from django.db.models.functions import Cast, Floor, Ln, TruncDate
from django.utils import timezone

from .models import Escalation, InsightDay, InsightRollupDay, InsightWait

RATIO = 1.05
FLOOR_SECONDS = 0.1
RECOMPUTE_DAYS = 2
# The insights' longest range (escalations.insights.MAX_DAYS): older days are never read.
WINDOW_DAYS = 90
# Serializes runs on PostgreSQL (the beat job and a backfill at once would insert twice).
_LOCK_KEY = 0x1A5_0009


class SecondsBetween(Func):
    """``end - start`` in seconds, as a float, computed by the database."""

    output_field = FloatField()
    arity = 2

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(
            compiler,
            connection,
            template="EXTRACT(EPOCH FROM (%(expressions)s))",
            arg_joiner=" - ",
            **extra,
        )

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # julianday is a float of days; rounded to the millisecond, which is what it resolves.
        return self.as_sql(
            compiler,
            connection,
            template="ROUND((julianday(%(expressions)s)) * 86400.0, 3)",
            arg_joiner=") - julianday(",
            **extra,
        )


def seconds_between() -> SecondsBetween:
    """A decision's time to decision in seconds."""
    return SecondsBetween(F("decided_at"), F("created_at"))


def bucket_expression(seconds: str = "seconds") -> Case:
    """The histogram bucket of the annotation ``seconds``, computed by the database."""
    scaled = Ln(F(seconds) / Value(FLOOR_SECONDS), output_field=FloatField())
    return Case(
        When(**{f"{seconds}__lt": FLOOR_SECONDS}, then=Value(0)),
        default=Cast(Floor(scaled / Value(math.log(RATIO))), models.IntegerField()) + 1,
        output_field=models.IntegerField(),
    )


def bucket_of(seconds: float) -> int:
    """``bucket_expression`` in Python."""
    if seconds < FLOOR_SECONDS:
        return 0
    return math.floor(math.log(seconds / FLOOR_SECONDS) / math.log(RATIO)) + 1


def _value_of(bucket: int, rank: int, count: int) -> float:
    """The ``rank``-th (from 0) of ``count`` values in ``bucket``, spread evenly over it."""
    share = (rank + 0.5) / count
    if bucket == 0:
        return FLOOR_SECONDS * share
    return FLOOR_SECONDS * RATIO ** (bucket - 1 + share)


def histogram_percentile(histogram: dict[int, int], fraction: float) -> float | None:
    """``percentile_cont(fraction)`` of the waits counted in ``histogram`` (bucket → count),
    within ``RATIO - 1`` of the exact figure."""
    total = sum(histogram.values())
    if not total:
        return None
    position = fraction * (total - 1)
    lower = int(position)
    wanted = (lower, min(lower + 1, total - 1))
    values: list[float] = []
    start = 0
    for bucket in sorted(histogram):
        count = histogram[bucket]
        values.extend(
            _value_of(bucket, rank - start, count)
            for rank in wanted[len(values) :]
            if rank < start + count
        )
        start += count
    return values[0] + (values[1] - values[0]) * (position - lower)


def histograms(rows: Iterable[tuple[Any, int, int]]) -> dict[Any, dict[int, int]]:
    """(key, bucket, count) rows summed into one histogram per key."""
    summed: dict[Any, dict[int, int]] = {}
    for key, bucket, count in rows:
        histogram = summed.setdefault(key, {})
        histogram[bucket] = histogram.get(bucket, 0) + count
    return summed


def day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _insert(model: type[models.Model], columns: list[str], select: QuerySet[Any]) -> None:
    """``INSERT INTO model (columns) <select>``: the select's columns in the same order."""
    sql, params = select.query.sql_with_params()
    quote = connection.ops.quote_name
    column_of = {field.name: field.column for field in model._meta.concrete_fields}
    names = ", ".join(quote(column_of[c]) for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {quote(model._meta.db_table)} ({names}) {sql}", params)


def _decided(first: date, last: date) -> QuerySet[Escalation]:
    return (
        Escalation.objects.filter(
            decided_at__gte=day_start(first), decided_at__lt=day_start(last + timedelta(days=1))
        )
        .order_by()
        .annotate(day=TruncDate("decided_at", tzinfo=UTC), seconds=seconds_between())
    )


def _roll_span(first: date, last: date) -> None:
    """Recompute the days ``first`` to ``last`` of every organization, in one transaction."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        for model in (InsightDay, InsightWait):
            model.objects.filter(day__gte=first, day__lte=last).delete()
        groups = ["organization", "day", "agent", "action_name"]
        groups += ["decision_channel", "status", "decider"]
        _insert(
            InsightDay,
            [*groups, "count", "decided_seconds_sum"],
            _decided(first, last)
            .values(*groups)
            .annotate(n=Count("*"), total=Sum("seconds"))
            .values_list(*groups, "n", "total"),
        )
        groups = ["organization", "day", "decision_channel", "bucket"]
        _insert(
            InsightWait,
            [*groups, "count"],
            _decided(first, last)
            .filter(decider="user")
            .annotate(bucket=bucket_expression())
            .values(*groups)
            .annotate(n=Count("*"))
            .values_list(*groups, "n"),
        )
        days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
        InsightRollupDay.objects.filter(day__in=days).delete()
        InsightRollupDay.objects.bulk_create(InsightRollupDay(day=day) for day in days)


def _spans(days: list[date]) -> list[tuple[date, date]]:
    """Sorted days as runs of consecutive days (first, last)."""
    spans: list[tuple[date, date]] = []
    for day in sorted(days):
        if spans and spans[-1][1] + timedelta(days=1) == day:
            spans[-1] = (spans[-1][0], day)
        else:
            spans.append((day, day))
    return spans


def days_due(today: date) -> list[date]:
    """The finished days of the window not rolled up yet, and the last ``RECOMPUTE_DAYS``."""
    first = today - timedelta(days=WINDOW_DAYS)
    rolled = set(InsightRollupDay.objects.filter(day__gte=first).values_list("day", flat=True))
    window = (first + timedelta(days=n) for n in range(WINDOW_DAYS))
    return [d for d in window if d not in rolled or d >= today - timedelta(days=RECOMPUTE_DAYS)]


def insights_rollup(*, day: date | None = None, since: date | None = None) -> int:
    """Roll up ``day``, or every day from ``since``, or (neither) the days due; only finished
    days (before today, UTC). Returns the number of days computed."""
    today = timezone.now().astimezone(UTC).date()
    if day is not None:
        days = [day] if day < today else []
    elif since is not None:
        days = [since + timedelta(days=n) for n in range(max(0, (today - since).days))]
    else:
        days = days_due(today)
    for first, last in _spans(days):
        _roll_span(first, last)
    return len(days)
