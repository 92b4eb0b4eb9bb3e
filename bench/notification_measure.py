"""What one notification fan-out run measures besides the escalations: the broker's queue depth,
the workers' task times and beat's ticks from their logs, the latency, duplicates and losses of
the deliveries the fake providers received; and a profile of one create and one send."""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections import Counter
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from .notification_providers import CHANNELS
from .queue_fanout import percentile

# A worker's INFO lines: a task done (with its run time and result), a task that expired
# while it waited in the queue.
TASK_DONE = re.compile(
    r"^\[([\d-]+ [\d:]+,\d+): INFO/MainProcess\] Task ([\w.]+)\[[^\]]+\] "
    r"succeeded in ([0-9.e-]+)s: (.*)$"
)
TASK_EXPIRED = re.compile(r"Discarding revoked task: ([\w.]+)\[")
TIMERS_TASK = "escalations.tasks.timers_tick"


class QueueDepth:
    """Samples the broker's queue length every 0.2 s in a thread: ``LLEN`` of the ``celery``
    list and of its priority lists (``celery:6``, … with kombu's priority steps; the separator
    is ``\x06\x16`` unless the settings choose one)."""

    names = ["celery"] + [f"celery{sep}{n}" for sep in (":", "\x06\x16") for n in range(1, 10)]

    def __init__(self, redis_url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(redis_url)
        self.samples: list[int] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.wait(0.2):
            with self.client.pipeline(transaction=False) as pipe:
                for name in self.names:
                    pipe.llen(name)
                self.samples.append(sum(pipe.execute()))

    def stop(self) -> dict[str, float]:
        self.stopped.set()
        self.thread.join()
        samples = self.samples or [0]
        return {"max": max(samples), "mean": round(statistics.fmean(samples), 1)}


class WorkerLogs:
    """What the workers log (``--loglevel INFO``) between construction and ``stop``."""

    def __init__(self, workdir: Path, workers: int) -> None:
        self.paths = [workdir / f"worker-{n}.log" for n in range(1, workers + 1)]
        self.offsets = [path.stat().st_size for path in self.paths]
        self.began = time.time()

    def stop(self) -> None:
        self.ended = time.time()
        self.lines = []
        for path, offset in zip(self.paths, self.offsets, strict=True):
            with path.open("rb") as handle:
                handle.seek(offset)
                self.lines += handle.read().decode(errors="replace").splitlines()

    def tasks(self, name: str, *, deliveries_per_task: int = 1) -> dict[str, Any]:
        """Run times (per delivery: a ``deliver_many`` task sends one escalation's three) and
        results of the task ``name``."""
        seconds: list[float] = []
        outcomes: Counter[str] = Counter()
        for match in filter(None, map(TASK_DONE.search, self.lines)):
            if match[2] == name:
                seconds.append(float(match[3]) / deliveries_per_task)
                outcomes[match[4].strip("'")] += 1
        return {
            "count": len(seconds),
            "outcomes": dict(outcomes),
            "p50_ms": ms(statistics.median(seconds)) if seconds else None,
            "p99_ms": ms(percentile(seconds, 0.99)) if seconds else None,
            "mean_ms": ms(statistics.fmean(seconds)) if seconds else None,
        }

    def periodic(self) -> dict[str, Any]:
        """Beat's tasks that expired in the queue, and the longest time without a timer tick
        (beat sends one a second; it escalates, reminds and expires escalations)."""
        expired = Counter(match[1] for match in filter(None, map(TASK_EXPIRED.search, self.lines)))
        ticks = sorted(
            datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # local time
            for match in filter(None, map(TASK_DONE.search, self.lines))
            if match[2] == TIMERS_TASK
        )
        edges = [self.began, *ticks, self.ended]
        return {
            "expired": dict(expired),
            "longest_without_timers_s": round(max(b - a for a, b in pairwise(edges)), 1),
        }


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def latency_figures(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return dict.fromkeys(("p50_ms", "p95_ms", "p99_ms", "max_ms"))
    return {
        "p50_ms": ms(statistics.median(latencies)),
        "p95_ms": ms(percentile(latencies, 0.95)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "max_ms": ms(max(latencies)),
    }


Receipt = tuple[str, float, str, int]  # channel, received_at, title kind, title number


def count_receipts(
    receipts: list[Receipt], kind: str, started: dict[int, float]
) -> tuple[dict[str, Any], dict[tuple[int, str], float]]:
    """Duplicates, losses and latencies of one run's receipts, against ``started`` (number →
    when its clock starts) × the three channels; and the first receipt per (number, channel)."""
    seen: dict[tuple[int, str], list[float]] = {}
    for channel, at, title_kind, number in receipts:
        if title_kind == kind:
            seen.setdefault((number, channel), []).append(at)
    expected = {(number, channel) for number in started for channel in CHANNELS}
    first = {pair: min(times) for pair, times in seen.items() if pair in expected}
    latencies = [at - started[number] for (number, _channel), at in first.items()]
    span = (max(first.values()) - min(started.values())) if first else float("nan")
    figures = {
        "expected": len(expected),
        "received": sum(len(times) for times in seen.values()),
        "duplicates": sum(len(times) - 1 for times in seen.values()),
        "losses": len(expected - set(first)),
        "unexpected": len(set(seen) - expected),
        "deliveries_per_s": round(len(first) / span, 1) if first else None,
        **latency_figures(latencies),
    }
    return figures, first


def profile_in_process(organization: Any, agent: Any, count: int) -> dict[str, Any]:
    """The create service (with its fan-out hook) and ``delivery_send``, one at a time in this
    process once the stack is stopped, with their SQL and provider calls timed apart."""
    import httpx
    from django.db import connection

    from escalations.services import escalation_create
    from notifications.deliveries import delivery_send
    from notifications.models import Delivery
    from notifications.transports import http

    spent = {"queries": 0, "sql": 0.0, "http": 0.0}

    def timed_sql(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        begun = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            spent["queries"] += 1
            spent["sql"] += time.perf_counter() - begun

    post = http.post

    def timed_post(url: str, **kwargs: Any) -> Any:
        begun = time.perf_counter()
        try:
            return post(url, **kwargs)
        finally:
            spent["http"] += time.perf_counter() - begun

    def measured(call: Any) -> dict[str, float]:
        spent.update(queries=0, sql=0.0, http=0.0)
        begun = time.perf_counter()
        call()
        return {"wall": time.perf_counter() - begun, **spent}

    creates, sends = [], []
    http.post = timed_post  # the transports call ``http.post`` through the module
    try:
        with connection.execute_wrapper(timed_sql):
            for number in range(count):
                data = {
                    "kind": "approval",
                    "title": f"Refund order profile-{number:05d}",
                    "action": {"name": "issue_refund", "arguments": {"order": number}},
                }
                creates.append(
                    measured(
                        lambda data=data: escalation_create(
                            organization=organization, agent=agent, api_key=None, data=data
                        )
                    )
                )
            pending = Delivery.objects.filter(
                escalation__title__startswith="Refund order profile-"
            ).values_list("pk", flat=True)
            for pk in list(pending):
                sends.append(measured(lambda pk=pk: delivery_send(pk)))
    finally:
        http.post = post
    begun = time.perf_counter()
    for _ in range(20):
        httpx.Client(timeout=15).close()
    client_ms = (time.perf_counter() - begun) / 20 * 1000

    def medians(rows: list[dict[str, float]]) -> dict[str, float]:
        return {
            "wall_ms": ms(statistics.median(row["wall"] for row in rows)),
            "queries": statistics.median(row["queries"] for row in rows),
            "sql_ms": ms(statistics.median(row["sql"] for row in rows)),
            "http_ms": ms(statistics.median(row["http"] for row in rows)),
        }

    return {
        "escalations": count,
        "create": medians(creates),
        "send": medians(sends),
        "new_httpx_client_ms": round(client_ms, 1),
    }
