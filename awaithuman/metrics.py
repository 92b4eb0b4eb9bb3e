"""Prometheus metrics: what the service functions count, and the ``/metrics`` scrape.

The official ``prometheus-client`` in its multiprocess mode: with ``PROMETHEUS_MULTIPROC_DIR`` set
(to an empty folder shared by every web and worker process of one host, emptied before they
start), each process writes its samples to memory-mapped files there and a scrape of any web
process sums them all. Without it (the embedded default, tests) samples live in the process.

Two kinds of figures:

* counted where they happen, by one call from the service function that does the thing
  (``escalation_created``, ``delivery_result``, …), after the transaction commits where a
  rollback would make the count wrong;
* read from the database at scrape time (``DatabaseCollector``): what is pending now, and how far
  behind the outbox dispatcher and the timers are. These hold across processes and restarts by
  construction.

Label values are bounded: no escalation ids, no raw paths (the route's pattern instead), and an
``organization`` label only with ``METRICS_ORGANIZATION_LABELS`` on (one series per
organization, which a large deployment may not want).
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.db import transaction
from django.db.models import Count, Min
from django.http import Http404, HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from awaithuman.problems import problem_response

# The ``…_created`` timestamp series double the exposition and no dashboard here reads them.
disable_created_metrics()


def _process_identifier() -> str:
    """Names this process's sample files: host name and pid, not the pid alone, so that
    containers sharing one folder (compose.yaml: web, worker and beat on a shared volume), each
    with its own pid 1, never write to the same file."""
    return f"{socket.gethostname()}-{os.getpid()}"


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # Before the first metric below is made: each takes its value class when it is created.
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_identifier)

# METRICS_ENABLED=0 turns counting off (every call below returns at once) and /metrics away;
# bench/metrics_overhead.py compares the two.
ENABLED = settings.METRICS_ENABLED
PER_ORGANIZATION = settings.METRICS_ORGANIZATION_LABELS
_ORG = ("organization",) if PER_ORGANIZATION else ()

# Human decisions take minutes to hours: buckets from a second to a day.
DECISION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
# Internal delays (wake-ups, the dispatcher, timers): milliseconds to a minute.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

ESCALATIONS_CREATED = Counter(
    "awaithuman_escalations_created",
    "Escalations created, by what the policy engine decided at once "
    "(auto_approve, auto_reject, require_human).",
    ["policy_outcome", *_ORG],
)
ESCALATIONS_DECIDED = Counter(
    "awaithuman_escalations_decided",
    "Escalations that reached a terminal state, by outcome and by who decided "
    "(user, policy, timeout, agent).",
    ["outcome", "decided_by", *_ORG],
)
TIME_TO_DECISION = Histogram(
    "awaithuman_escalation_time_to_decision_seconds",
    "From creation to the terminal state, by who decided.",
    ["decided_by"],
    buckets=DECISION_BUCKETS,
)
WAITERS_PARKED = Gauge(
    "awaithuman_waiters_parked",
    "Long-polls (/wait) parked now, waiting for a decision.",
    multiprocess_mode="livesum",
)
WAKE_LATENCY = Histogram(
    "awaithuman_waiter_wake_seconds",
    "From a decision to a parked long-poll answering with it.",
    buckets=LAG_BUCKETS,
)
DELIVERIES = Counter(
    "awaithuman_deliveries",
    "Notification send attempts, by channel and result (sent, retrying, failed, skipped).",
    ["channel", "result"],
)
CALLBACK_ATTEMPTS = Counter(
    "awaithuman_callback_attempts",
    "Signed HTTP deliveries attempted: agent callbacks and organization webhooks, by result "
    "(success, failure).",
    ["kind", "result"],
)
OUTBOX_DISPATCH_DELAY = Histogram(
    "awaithuman_outbox_dispatch_delay_seconds",
    "From an outbox row falling due to a dispatcher handing it to its consumer.",
    buckets=LAG_BUCKETS,
)
TIMER_DELAY = Histogram(
    "awaithuman_timer_delay_seconds",
    "From an escalation's timer falling due to a ticker acting on it.",
    buckets=LAG_BUCKETS,
)
RATE_LIMIT_REFUSALS = Counter(
    "awaithuman_rate_limit_refusals", "API requests refused with 429 by the per-key rate limit."
)
REQUEST_DURATION = Histogram(
    "awaithuman_http_request_duration_seconds",
    "Django requests, by route pattern, method and status (the long-poll is counted by the "
    "waiter metrics instead).",
    ["route", "method", "status"],
)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _organization(escalation: Any) -> tuple[str, ...]:
    return (escalation.organization.public_id,) if PER_ORGANIZATION else ()


# --- Counted where it happens (a rolled-back change counts nothing: on commit) ------------------


def escalation_created(escalation: Any, *, policy_outcome: str) -> None:
    if not ENABLED:
        return
    transaction.on_commit(
        ESCALATIONS_CREATED.labels(policy_outcome, *_organization(escalation)).inc
    )


def escalation_decided(escalation: Any, *, outcome: str, decided_by: str) -> None:
    if not ENABLED:
        return
    decided = ESCALATIONS_DECIDED.labels(outcome, decided_by, *_organization(escalation))
    duration = TIME_TO_DECISION.labels(decided_by)
    seconds = max(0.0, (timezone.now() - escalation.created_at).total_seconds())

    def count() -> None:
        decided.inc()
        duration.observe(seconds)

    transaction.on_commit(count)


def waiter_parked(*, pending: bool) -> bool:
    """A long-poll starts waiting if its escalation is ``pending``; returns whether it did."""
    if not ENABLED or not pending:
        return False
    WAITERS_PARKED.inc()
    return True


def waiter_unparked(decision: dict[str, Any] | None) -> None:
    """A parked long-poll returns: with the ``decision`` it was woken for, or without one (its
    timeout, a problem)."""
    WAITERS_PARKED.dec()
    if decision and decision.get("decided_at"):
        decided = datetime.fromisoformat(decision["decided_at"].replace("Z", "+00:00"))
        WAKE_LATENCY.observe(max(0.0, (timezone.now() - decided).total_seconds()))


def delivery_result(*, channel: str, result: str) -> None:
    if not ENABLED:
        return
    DELIVERIES.labels(channel, result).inc()


def callback_attempted(*, kind: str, succeeded: bool) -> None:
    if not ENABLED:
        return
    CALLBACK_ATTEMPTS.labels(kind, "success" if succeeded else "failure").inc()


def outbox_dispatched(due_since: list[datetime], now: datetime) -> None:
    if not ENABLED:
        return
    for available_at in due_since:
        OUTBOX_DISPATCH_DELAY.observe(max(0.0, (now - available_at).total_seconds()))


def timers_acted(due_since: list[datetime], now: datetime) -> None:
    if not ENABLED:
        return
    for next_action_at in due_since:
        TIMER_DELAY.observe(max(0.0, (now - next_action_at).total_seconds()))


def rate_limit_refused() -> None:
    if not ENABLED:
        return
    RATE_LIMIT_REFUSALS.inc()


class RequestMetricsMiddleware:
    """Times every Django request under its route's pattern (``api/v1/escalations/<str:…>``),
    never its path, so ids never become label values."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        if not ENABLED:
            raise MiddlewareNotUsed
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = match.route if match is not None else "(unmatched)"
        method = request.method if request.method in _METHODS else "other"
        REQUEST_DURATION.labels(route, method, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response


# --- Read at scrape time ---------------------------------------------------------------------


class DatabaseCollector(Collector):
    """Figures that are the database's to tell: pending escalations by priority, and how long
    the oldest due outbox row and the oldest due timer have been waiting (0 when none is)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from escalations.models import Escalation, OutboxEvent

        now = timezone.now()
        pending = GaugeMetricFamily(
            "awaithuman_escalations_pending",
            "Escalations waiting for a decision, by priority.",
            labels=["priority"],
        )
        counts = dict(
            Escalation.objects.filter(status=Escalation.Status.PENDING)
            .order_by()
            .values("priority")
            .annotate(n=Count("id"))
            .values_list("priority", "n")
        )
        for priority in Escalation.Priority.values:
            pending.add_metric([priority], counts.get(priority, 0))
        yield pending

        oldest_due = OutboxEvent.objects.filter(
            parked_at__isnull=True, available_at__lte=now
        ).aggregate(oldest=Min("available_at"))["oldest"]
        yield GaugeMetricFamily(
            "awaithuman_outbox_lag_seconds",
            "Age of the oldest outbox row that is due and not yet dispatched.",
            value=(now - oldest_due).total_seconds() if oldest_due else 0.0,
        )
        yield GaugeMetricFamily(
            "awaithuman_outbox_parked",
            "Outbox rows parked after their last attempt failed (see /org/effects/).",
            value=OutboxEvent.objects.filter(parked_at__isnull=False).count(),
        )
        oldest_timer = Escalation.objects.filter(
            status=Escalation.Status.PENDING, next_action_at__lte=now
        ).aggregate(oldest=Min("next_action_at"))["oldest"]
        yield GaugeMetricFamily(
            "awaithuman_timer_lag_seconds",
            "How long the oldest due escalation timer has been waiting for a ticker.",
            value=(now - oldest_timer).total_seconds() if oldest_timer else 0.0,
        )


_database = CollectorRegistry()
_database.register(DatabaseCollector())


def exposition() -> bytes:
    """Every metric in the Prometheus text format: this host's processes, then the database's."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        processes = generate_latest(registry)
    else:
        processes = generate_latest(REGISTRY)
    return processes + generate_latest(_database)


# --- The scrape --------------------------------------------------------------------------------


def _allowed_address(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in _allow_list())


def _allow_list() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(entry, strict=False) for entry in settings.METRICS_ALLOW_FROM]


def _bearer_ok(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(given, token)


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """``/metrics``: for a scraper that sends ``METRICS_TOKEN`` as a bearer token or connects
    from an address in ``METRICS_ALLOW_FROM``; refused otherwise (and when neither is set)."""
    if not ENABLED:
        raise Http404("Metrics are turned off (METRICS_ENABLED=0).")
    if not (_bearer_ok(request) or _allowed_address(request.META.get("REMOTE_ADDR", ""))):
        return problem_response(
            status_code=401,
            type_slug="not-authenticated",
            detail="Scraping /metrics needs 'Authorization: Bearer <METRICS_TOKEN>' or an "
            "address in METRICS_ALLOW_FROM.",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)
