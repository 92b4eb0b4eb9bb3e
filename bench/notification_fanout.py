"""Notification fan-out: escalations × 3 contact points, sent by Celery workers to fake providers.

``python -m bench.notification_fanout [--escalations 1000] [--paced 200 --rate 5] [--workers 2]
[--clients 4] [--quick]``

The production processes on a fresh PostgreSQL database and Redis: daphne (the API), Celery beat
and ``--workers`` Celery workers, each ``--pool solo``. Fake Twilio, Telegram and Slack servers
(``tests/notifications/fakes.py``, which check auth and payloads like the real APIs) run in a
child process of their own. The organization has one policy (every escalation → level 1 → the
role ``operator``) and three operators, each with one verified contact point on a different
provider placed before their account e-mail: each escalation makes three deliveries to three
fake providers.

Two loads, each a product run followed by its baseline:

* ``--escalations`` created through ``POST /api/v1/escalations`` by ``--clients`` concurrent
  clients as fast as the API answers (the figure issue #5 asks for), and ``--paced`` created at
  ``--rate`` per second, below what the workers can send.
* Latency per delivery: the fake's receipt time minus the escalation's ``level_entered_at``;
  deliveries/s: receipts / (first ``level_entered_at`` → last receipt); duplicates and losses
  counted at the fakes.
* Celery baseline: the product run's arrival times replayed as three ``bare_post`` tasks per
  escalation — the same provider request, on a reused HTTP client, no database — on the same
  workers, broker and fakes.

Then the fakes alone (``bare_post`` in threads, no Celery), and a profile of one create and one
send in this process once the workers have stopped. All clocks are this machine's wall clock.
Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and Redis; recreates the database
``awaithuman_bench_notifications`` and uses Redis db 5. Writes ``bench/RESULTS-notifications.md``
and ``bench/notification_fanout.json`` (``--quick`` prints only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from celery import shared_task

from .queue_fanout import ADMIN_URL, BIN, ROOT, environment, log, percentile, setup_django

HERE = Path(__file__).resolve().parent
DATABASE = "awaithuman_bench_notifications"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
REDIS_URL = "redis://127.0.0.1:6379/5"
TARGET_P99_S = 2.0
WAIT_AFTER_LAST_CREATE_S = 120.0
# One operator per provider: (channel, address the fake knows).
OPERATORS = (
    ("sms", "+15555550101"),
    ("telegram", "700000001"),
    ("slack", "U0FANOUT01"),
)
CHANNELS = tuple(channel for channel, _ in OPERATORS)
# Escalation titles end in "<kind>-<number>": burst-00042, baseburst-00042, loop-00042, …
TITLE = re.compile(r"\b([a-z]+)-(\d{5})\b")
# A worker's INFO lines: a task done (with its run time and result), a task that expired
# while it waited in the queue.
TASK_DONE = re.compile(
    r"^\[([\d-]+ [\d:]+,\d+): INFO/MainProcess\] Task ([\w.]+)\[[^\]]+\] "
    r"succeeded in ([0-9.e-]+)s: (.*)$"
)
TASK_EXPIRED = re.compile(r"Discarding revoked task: ([\w.]+)\[")
TIMERS_TASK = "escalations.tasks.timers_tick"


# --- The baseline task (run by the workers: they import this module with ``-I``) ------------


_client: Any = None


def client() -> Any:
    """One httpx client per process, made on first use (a client costs tens of milliseconds to
    make: it loads the CA bundle)."""
    global _client
    if _client is None:
        import httpx

        _client = httpx.Client(timeout=15)
    return _client


@shared_task(name="bench.notification_fanout.bare_post", ignore_result=True)
def bare_post(channel: str, address: str, title: str) -> None:
    """One provider request shaped like our transport's, on a reused client, with no database:
    what a delivery costs the worker, the broker and the providers without AwaitHuman."""
    from django.conf import settings

    http = client()
    summary = f"{title}\nissue_refund(order=1042, amount=750)"
    if channel == "sms":
        sid = settings.TWILIO_ACCOUNT_SID
        response = http.post(
            f"{settings.TWILIO_API_BASE}/2010-04-01/Accounts/{sid}/Messages.json",
            data={
                "To": address,
                "From": settings.TWILIO_FROM_NUMBER,
                "Body": f"AwaitHuman: {summary}\nReply YES 1234 to approve or NO 1234 <reason>.",
            },
            auth=(sid, settings.TWILIO_AUTH_TOKEN),
        )
    elif channel == "telegram":
        response = http.post(
            f"{settings.TELEGRAM_API_BASE}/bot{settings.TELEGRAM_BOT_TOKEN}/sendMessage",
            json={
                "chat_id": address,
                "text": summary,
                "reply_markup": {
                    "inline_keyboard": [
                        [
                            {"text": "✅ Approve", "callback_data": "ah:approve:" + "x" * 22},
                            {"text": "❌ Reject", "callback_data": "ah:reject:" + "x" * 22},
                        ]
                    ]
                },
            },
        )
    else:
        response = http.post(
            f"{settings.SLACK_API_BASE}/chat.postMessage",
            json={
                "channel": address,
                "text": title,
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": summary}}],
            },
            headers={"Authorization": f"Bearer {settings.SLACK_BOT_TOKEN}"},
        )
    response.raise_for_status()


# --- The fake providers (a child process) ------------------------------------------------------


def fake_providers(env: dict[str, str], urls: Any, stop: Any, out: Any, count: Any) -> None:
    """Serve the three fakes until ``stop``; then put every accepted request on ``out`` as
    (channel, received_at, title kind, title number)."""
    setup_django(env)  # fakes.py imports the models
    from tests.notifications.fakes import FakeSlack, FakeTelegram, FakeTwilio

    receipts: list[tuple[str, float, bytes]] = []

    def recording(base: type, channel: str) -> Any:
        class Recording(base):  # type: ignore[valid-type, misc]
            def handle(self, request: Any) -> Any:
                status, headers, body = super().handle(request)
                # Slack answers failures with 200 and {"ok": false}.
                if status < 300 and json.loads(body or b"{}").get("ok", True):
                    receipts.append((channel, request.received_at, request.body))
                    with count.get_lock():
                        count.value += 1
                return status, headers, body

        return Recording()

    twilio, telegram, slack = (
        recording(FakeTwilio, "sms"),
        recording(FakeTelegram, "telegram"),
        recording(FakeSlack, "slack"),
    )
    telegram.chats.add(dict(OPERATORS)["telegram"])
    slack.users.add(dict(OPERATORS)["slack"])
    with twilio, telegram, slack:
        urls.put({"sms": twilio.url, "telegram": telegram.url, "slack": slack.url})
        stop.wait()
    found = []
    for channel, received_at, body in receipts:
        match = TITLE.search(body.decode(errors="replace"))
        found.append((channel, received_at, *(match.groups() if match else ("?", "0"))))
    out.put(found)


class FakeProviders:
    def __init__(self, env: dict[str, str]) -> None:
        ctx = mp.get_context("spawn")
        self.stop, self.out = ctx.Event(), ctx.Queue()
        self.count = ctx.Value("i", 0)
        urls = ctx.Queue()
        self.process = ctx.Process(
            target=fake_providers, args=(env, urls, self.stop, self.out, self.count), daemon=True
        )
        self.process.start()
        self.urls: dict[str, str] = urls.get(timeout=60)

    def finish(self) -> list[tuple[str, float, str, int]]:
        self.stop.set()
        found = self.out.get(timeout=120)
        self.process.join(timeout=30)
        return [(channel, at, kind, int(number)) for channel, at, kind, number in found]


def provider_settings(urls: dict[str, str]) -> dict[str, str]:
    """The environment that points our transports at the fakes, with the credentials they check."""
    from tests.notifications.fakes import FakeSlack, FakeTelegram, FakeTwilio

    return {
        "TWILIO_API_BASE": urls["sms"],
        "TWILIO_ACCOUNT_SID": FakeTwilio.account_sid,
        "TWILIO_AUTH_TOKEN": FakeTwilio.auth_token,
        "TWILIO_FROM_NUMBER": FakeTwilio.from_number,
        "TELEGRAM_API_BASE": urls["telegram"],
        "TELEGRAM_BOT_TOKEN": FakeTelegram.bot_token,
        "TELEGRAM_BOT_USERNAME": "AwaitHumanBenchBot",
        "SLACK_API_BASE": urls["slack"],
        "SLACK_BOT_TOKEN": FakeSlack.bot_token,
    }


# --- Setup -------------------------------------------------------------------------------------


def recreate_database(env: dict[str, str]) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{DATABASE}"')
    subprocess.run(
        [str(BIN / "python"), "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


def seed() -> tuple[str, Any, Any]:
    """The organization, its policy and three operators with one fast contact point each,
    through the services a person's console clicks go through; returns the agent's key, the
    organization and the agent."""
    from audit.services import SYSTEM_ACTOR
    from escalations.models import Policy, PolicyLevel
    from notifications.services import (
        contact_point_add,
        contact_point_mark_verified,
        contact_point_move,
    )
    from tenants.models import Membership
    from tenants.services import (
        agent_create,
        api_key_create,
        membership_add,
        organization_create,
        user_get_or_create,
    )

    owner = user_get_or_create(email="owner@fanout.test")
    organization = organization_create(name="Notification fan-out", owner=owner, actor=SYSTEM_ACTOR)
    agent = agent_create(organization=organization, name="fanout-bot", actor=SYSTEM_ACTOR)
    key = api_key_create(organization=organization, agent=agent, actor=SYSTEM_ACTOR).plaintext
    for channel, address in OPERATORS:
        user = user_get_or_create(email=f"{channel}@fanout.test")
        membership = membership_add(
            organization=organization, user=user, role=Membership.Role.OPERATOR, actor=SYSTEM_ACTOR
        )
        # contact_point_add seeds the account e-mail first; moving the new point up makes it
        # the one fan-out picks, with the e-mail left as the fallback.
        point = contact_point_add(membership=membership, channel=channel, address=address)
        contact_point_mark_verified(contact_point=point, actor=SYSTEM_ACTOR)
        contact_point_move(contact_point=point, membership=membership, up=True)
    policy = Policy.objects.create(
        organization=organization, name="Everything to the operators", outcome="require_human"
    )
    PolicyLevel.objects.create(policy=policy, position=1, roles=["operator"])
    return key, organization, agent


def start_stack(env: dict[str, str], workdir: Path, workers: int) -> tuple[Any, str]:
    """daphne, beat and the workers (each says it is ready before the clock starts)."""
    from tests.live import Stack

    stack = Stack(env, workdir)
    base = stack.daphne()
    celery = str(BIN / "celery")
    stack.start(
        "beat", celery, "-A", "awaithuman", "beat", "--loglevel", "INFO",
        "--schedule", str(workdir / "beat-schedule"),
    )  # fmt: skip
    for number in range(1, workers + 1):
        stack.start(
            f"worker-{number}", celery, "-A", "awaithuman", "worker", "--pool", "solo",
            "--loglevel", "INFO", "--hostname", f"bench-{number}@%h",
            "--include", "bench.notification_fanout",
        )  # fmt: skip
    for number in range(1, workers + 1):
        stack._wait_for_log(f"worker-{number}.log", " ready.")
    stack._wait_for_log("beat.log", "Scheduler: Sending due task")
    return stack, base


# --- Creating escalations, counting receipts -------------------------------------------------


async def create_all(
    base: str, key: str, kind: str, count: int, clients: int, rate: float | None
) -> list[dict[str, Any]]:
    """POST ``count`` escalations titled ``… <kind>-<number>`` from ``clients`` concurrent
    connections: as fast as the API answers, or the n-th at start + n / ``rate``."""
    import httpx

    results: list[dict[str, Any]] = []
    numbers = iter(range(count))
    origin = time.time()

    async def creator() -> None:
        async with httpx.AsyncClient(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60
        ) as http:
            for number in numbers:
                if rate:
                    await asyncio.sleep(max(0.0, origin + number / rate - time.time()))
                started = time.time()
                response = await http.post(
                    "/api/v1/escalations",
                    json={
                        "kind": "approval",
                        "title": f"Refund order {kind}-{number:05d}",
                        "action": {
                            "name": "issue_refund",
                            "arguments": {"order": number, "amount": 750},
                        },
                        "context": {"reasoning": "The customer was charged twice."},
                    },
                )
                body = response.json() if response.status_code == 201 else {}
                results.append(
                    {
                        "number": number,
                        "id": body.get("id"),
                        "status": response.status_code,
                        "started": started,
                        "ended": time.time(),
                    }
                )

    await asyncio.gather(*(creator() for _ in range(clients)))
    return sorted(results, key=lambda row: row["number"])


def wait_for(providers: FakeProviders, total: int, deadline: float, settle: float) -> float:
    """Until the fakes hold ``total`` receipts or the deadline passes, then ``settle`` seconds
    more for late duplicates; returns when the count was reached (or the deadline)."""
    while providers.count.value < total and time.time() < deadline:
        time.sleep(0.05)
    reached = time.time()
    time.sleep(settle)
    return reached


class QueueDepth:
    """Samples the broker's queue length every 0.2 s in a thread: ``LLEN`` of the ``celery``
    list and of its priority lists (``celery:6``, … with kombu's priority steps; the separator
    is ``\x06\x16`` unless the settings choose one)."""

    names = ["celery"] + [f"celery{sep}{n}" for sep in (":", "\x06\x16") for n in range(1, 10)]

    def __init__(self) -> None:
        import redis

        self.client = redis.Redis.from_url(REDIS_URL)
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


# --- The runs ----------------------------------------------------------------------------------


class Load:
    """One load profile: the product run, then the same arrivals replayed as bare tasks."""

    def __init__(self, name: str, count: int, rate: float | None) -> None:
        self.name, self.count, self.rate = name, count, rate
        self.product: dict[str, Any] = {}
        self.baseline: dict[str, Any] = {}

    def run(self, args: argparse.Namespace, base: str, key: str, providers: FakeProviders,
            workdir: Path) -> None:  # fmt: skip
        from bench.server import CpuMeter

        logs, depth, meter = WorkerLogs(workdir, args.workers), QueueDepth(), CpuMeter()
        before = providers.count.value
        created = asyncio.run(create_all(base, key, self.name, self.count, args.clients, self.rate))
        ok = [row for row in created if row["status"] == 201]
        last_create = max(row["ended"] for row in created)
        span = last_create - min(row["started"] for row in created)
        log(f"  {len(ok)} of {len(created)} created in {span:.1f} s")
        reached = wait_for(
            providers,
            before + len(ok) * len(CHANNELS),
            last_create + WAIT_AFTER_LAST_CREATE_S,
            args.settle,
        )
        log(f"  {providers.count.value - before} receipts, the last {reached - last_create:.1f} s"
            " after the last create")  # fmt: skip
        self.by_id = {row["id"]: row["number"] for row in ok}
        self.entered = level_entered(self.by_id)
        self.product = {
            "created": len(ok),
            "create_errors": dict(
                Counter(str(row["status"]) for row in created if row["status"] != 201)
            ),
            "creates_per_s": round(len(ok) / span, 1),
            "create_span_s": round(span, 2),
            "create_p50_ms": ms(statistics.median(row["ended"] - row["started"] for row in ok)),
            "create_p99_ms": ms(percentile([row["ended"] - row["started"] for row in ok], 0.99)),
            "queue_depth": depth.stop(),
            "machine": meter.stop(),
        }
        logs.stop()
        self.product.update(
            worker_tasks=logs.tasks(
                "notifications.tasks.deliver_many", deliveries_per_task=len(CHANNELS)
            ),
            periodic=logs.periodic(),
        )

        log("  Celery baseline: the same arrivals as bare tasks …")
        logs, depth, meter = WorkerLogs(workdir, args.workers), QueueDepth(), CpuMeter()
        before = providers.count.value
        entered = sorted(self.entered.values())
        addresses = dict(OPERATORS)
        self.started: dict[int, float] = {}
        origin = time.time() + 0.5
        for number, at in enumerate(entered):
            time.sleep(max(0.0, origin + (at - entered[0]) - time.time()))
            self.started[number] = time.time()
            for channel in CHANNELS:
                bare_post.delay(
                    channel, addresses[channel], f"Refund order base{self.name}-{number:05d}"
                )
        wait_for(
            providers,
            before + len(entered) * len(CHANNELS),
            time.time() + WAIT_AFTER_LAST_CREATE_S,
            args.settle,
        )
        self.baseline = {"queue_depth": depth.stop(), "machine": meter.stop()}
        logs.stop()
        self.baseline.update(
            worker_tasks=logs.tasks("bench.notification_fanout.bare_post"),
            periodic=logs.periodic(),
        )

    def figures(self, receipts: list[Receipt]) -> dict[str, Any]:
        """Join the receipts with the rows: latency from ``level_entered_at``, and where it
        went; the baseline's from its own clock."""
        from notifications.models import Delivery

        counted, first = count_receipts(receipts, self.name, self.entered)
        self.product.update(counted)
        rows = list(
            Delivery.objects.filter(escalation__public_id__in=list(self.by_id)).values_list(
                "escalation__public_id", "channel", "created_at", "sent_at", "status", "attempts"
            )
        )
        fan_out, to_receipt, to_sent = [], [], []
        for public_id, channel, created_at, sent_at, _status, _attempts in rows:
            number = self.by_id[public_id]
            fan_out.append(created_at.timestamp() - self.entered[number])
            if (number, channel) in first:
                to_receipt.append(first[(number, channel)] - created_at.timestamp())
                if sent_at is not None:
                    to_sent.append(sent_at.timestamp() - first[(number, channel)])
        self.product["deliveries"] = {
            "rows": len(rows),
            "status": dict(Counter(row[4] for row in rows)),
            "retried": sum(1 for row in rows if row[5] > 1),
        }
        self.product["stages"] = {
            "level_entered_to_delivery_row": latency_figures(fan_out),
            "delivery_row_to_receipt": latency_figures(to_receipt),
            "receipt_to_sent_at": latency_figures(to_sent),
        }
        self.baseline.update(count_receipts(receipts, f"base{self.name}", self.started)[0])
        return {
            "escalations": self.count,
            "rate": self.rate,
            "product": self.product,
            "celery_baseline": self.baseline,
        }


def level_entered(by_id: dict[str, int]) -> dict[int, float]:
    """Escalation number → its ``level_entered_at``, from the database."""
    from escalations.models import Escalation

    return {
        by_id[public_id]: at.timestamp()
        for public_id, at in Escalation.objects.filter(public_id__in=list(by_id)).values_list(
            "public_id", "level_entered_at"
        )
    }


def run_loop_baseline(count: int, threads: int, providers: FakeProviders) -> dict[str, Any]:
    """``bare_post`` called in ``threads`` threads of this process: the fakes' and the HTTP
    client's own capacity."""
    addresses = dict(OPERATORS)
    started: dict[int, float] = {}
    numbers = iter(range(count))

    def loop() -> None:
        for number in numbers:
            started[number] = time.time()
            for channel in CHANNELS:
                bare_post(channel, addresses[channel], f"Refund order loop-{number:05d}")

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    begun = time.time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return {"started": started, "wall_s": time.time() - begun}


def profile_in_process(organization: Any, agent: Any, count: int) -> dict[str, Any]:
    """The create service (with its fan-out hook) and ``delivery_send``, one at a time in this
    process once the stack is stopped, with their SQL and provider calls timed apart."""
    import httpx
    from django.db import connection

    from escalations.services import escalation_create
    from notifications.models import Delivery
    from notifications.services import delivery_send
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


def code_version() -> str:
    """The commit measured, and the files that differ from it: work in progress in the tree is
    measured too."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        ).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    if not changed:
        return f"commit {commit}"
    more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
    return f"commit {commit} with local changes to {', '.join(changed[:8])}{more}"


# --- Results -----------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "–"
    return f"{a / b:,.0f}×" if a / b >= 100 else f"{a / b:.1f}×"


def verdict(product: dict[str, Any]) -> str:
    met = (
        product["p99_ms"] is not None
        and product["p99_ms"] <= TARGET_P99_S * 1000
        and product["duplicates"] == 0
        and product["losses"] == 0
    )
    return (
        f"**Target p99 ≤ {TARGET_P99_S:g} s, zero duplicates, zero losses: "
        f"{'met' if met else 'missed'}** — p99 {(product['p99_ms'] or 0) / 1000:.2f} s, "
        f"{product['duplicates']} duplicates, {product['losses']} losses (delivery rows: "
        f"{product['deliveries']['status']}, {product['deliveries']['retried']} retried)."
    )


def load_section(load: dict[str, Any]) -> list[str]:
    product, celery = load["product"], load["celery_baseline"]
    wt, bt = product["worker_tasks"], celery["worker_tasks"]

    def row(label: str, key: str, unit: str = " ms") -> str:
        a, b = product[key], celery[key]
        return f"| {label} | {a:,}{unit} | {b:,}{unit} | {ratio(a, b)} |"

    return [
        "| figure | AwaitHuman | Celery baseline | ratio |",
        "|---|---|---|---|",
        row("level entered → provider receipt p50", "p50_ms"),
        row("p95", "p95_ms"),
        row("p99", "p99_ms"),
        row("max", "max_ms"),
        row("deliveries/s (first level entered → last receipt)", "deliveries_per_s", ""),
        f"| worker time per delivery p50 / p99 | {wt['p50_ms']} / {wt['p99_ms']} ms | "
        f"{bt['p50_ms']} / {bt['p99_ms']} ms | {ratio(wt['p50_ms'], bt['p50_ms'])} / "
        f"{ratio(wt['p99_ms'], bt['p99_ms'])} |",
        f"| broker queue depth max / mean | {product['queue_depth']['max']} / "
        f"{product['queue_depth']['mean']} | {celery['queue_depth']['max']} / "
        f"{celery['queue_depth']['mean']} | |",
        f"| duplicates / losses (counted at the fakes) | {product['duplicates']} / "
        f"{product['losses']} | {celery['duplicates']} / {celery['losses']} | |",
        f"| escalation timers: longest time without a tick / beat tasks expired in the queue | "
        f"{product['periodic']['longest_without_timers_s']} s / "
        f"{sum(product['periodic']['expired'].values())} | "
        f"{celery['periodic']['longest_without_timers_s']} s / "
        f"{sum(celery['periodic']['expired'].values())} | |",
        f"| other work on the machine meanwhile | "
        f"{product['machine']['other_cpu_cores']:.2f} cores | "
        f"{celery['machine']['other_cpu_cores']:.2f} cores | |",
        "",
        verdict(product),
        "",
        f"Creates: {product['created']:,} in {product['create_span_s']:.1f} s = "
        f"**{product['creates_per_s']} escalations/s** through `POST /api/v1/escalations` "
        f"(per request p50 {product['create_p50_ms']} ms, p99 {product['create_p99_ms']} ms; "
        f"errors: {product['create_errors'] or 'none'}).",
    ]


def markdown(document: dict[str, Any]) -> str:
    burst, paced = document["loads"]["burst"], document["loads"]["paced"]
    machine, args = document["machine"], document["args"]
    loop, profile = document["loop"], document["profile"]
    stages = burst["product"]["stages"]
    create, send = profile["create"], profile["send"]
    lines = [
        "# Notification fan-out benchmark",
        "",
        f"`{document['command']}` (part of `make bench`), measured {document['measured']}; the "
        f"run took {document['elapsed_s']:.0f} s. Machine: {machine['nproc']} CPUs "
        f"({machine['cpu']}), {machine['memory_gib']} GiB, Python {machine['python']}, "
        f"PostgreSQL {machine['postgresql']}, Redis {machine['redis']}, Celery "
        f"{document['celery']}, Django {machine['django']}. Other work on the machine is in the "
        "tables (CPU used by processes that are not this benchmark's, PostgreSQL's or Redis's). "
        f"Code: {document['code']}.",
        "",
        "Each escalation notifies three operators with one contact point each — SMS via Twilio, "
        f"Telegram, Slack — sent by {args['workers']} Celery workers (`--pool solo`) to fake "
        "providers; daphne, beat, PostgreSQL, Redis, the fakes and the load generator share the "
        f"machine. {args['clients']} concurrent HTTP clients create the escalations. The Celery "
        "baseline replays the same arrivals as three bare tasks each (one provider request, no "
        "database) on the same workers, broker and fakes.",
        "",
        f"## {burst['escalations']:,} escalations × 3 contact points, created as fast as the API "
        "answers",
        "",
        *load_section(burst),
        "",
        f"## {paced['escalations']:,} escalations × 3 contact points, created at "
        f"{paced['rate']:g} per second",
        "",
        *load_section(paced),
        "",
        "## The fake providers alone",
        "",
        f"`bare_post` called from {args['workers']} threads of the bench process, no Celery: "
        f"**{loop['deliveries_per_s']} requests/s** accepted "
        f"({ratio(loop['deliveries_per_s'], burst['product']['deliveries_per_s'])} the burst's "
        f"deliveries/s), {loop['duplicates']} duplicates, {loop['losses']} losses"
        + (
            ": the fakes are not what limits the figures above."
            if loop["deliveries_per_s"] > 2 * (burst["product"]["deliveries_per_s"] or 0)
            else ": the fakes are close to the product's rate, so they limit it too."
        ),
        "",
        "## Where the time goes",
        "",
        f"Per delivery in the {burst['escalations']:,}-escalation run (from the delivery rows "
        "and the fakes' receipts):",
        "",
        "| stage | p50 | p99 | max |",
        "|---|---|---|---|",
        *(
            f"| {label} | {stages[name]['p50_ms']:,} ms | {stages[name]['p99_ms']:,} ms | "
            f"{stages[name]['max_ms']:,} ms |"
            for name, label in STAGES
        ),
        "",
        "One at a time in the bench process after the stack has stopped (medians of "
        f"{profile['escalations']} creates and their {profile['escalations'] * 3} sends, to the "
        "same fakes):",
        "",
        "| operation | wall | SQL queries | SQL time | provider call |",
        "|---|---|---|---|---|",
        f"| `escalation_create` with its fan-out hook | {create['wall_ms']} ms | "
        f"{create['queries']:g} | {create['sql_ms']} ms | – |",
        f"| `delivery_send`: claim, load, answer code, transport, record and audit | "
        f"{send['wall_ms']} ms | {send['queries']:g} | {send['sql_ms']} ms | "
        f"{send['http_ms']} ms |",
        "| for scale: making one `httpx.Client` (its TLS context loads the CA bundle) | "
        f"{profile['new_httpx_client_ms']} ms | | | |",
        "",
        document["analysis"],
        "",
        "## Method",
        "",
        METHOD,
    ]
    return "\n".join(lines) + "\n"


STAGES = (
    (
        "level_entered_to_delivery_row",
        "level entered → delivery row (create commit, fan-out hook in daphne)",
    ),
    (
        "delivery_row_to_receipt",
        "delivery row → provider receipt (enqueue, wait in Redis, claim, load, answer code, "
        "HTTP client and connect)",
    ),
    ("receipt_to_sent_at", "provider receipt → `sent_at` (the provider's answer)"),
)

METHOD = """\
- **Processes.** A fresh database (`awaithuman_bench_notifications`, migrated) and Redis db 5
  (flushed); production settings (`DATABASE_URL`, `REDIS_URL`, `TIMERS_IN_PROCESS=0`,
  `DEBUG=0`, `LOG_LEVEL=WARNING`, `RATE_LIMIT_DEFAULT` raised so one agent key may create them
  all): one `daphne awaithuman.asgi:application`, `celery beat`, and the workers
  (`celery -A awaithuman worker --pool solo --loglevel INFO --include bench.notification_fanout`).
  Solo: one process that runs one task at a time (with `acks_late` and prefetch 1 from the
  settings) — no prefork parent relaying each task to a child over a pipe, one process fewer per
  worker on a small machine, and the pool the live tests use. The workers' INFO lines give each
  task's run time.
- **Providers.** `FakeTwilio`, `FakeTelegram` and `FakeSlack` from
  `tests/notifications/fakes.py`, in a child process of their own (threaded HTTP servers that
  check auth and payloads like the real APIs). A receipt is an accepted request, time-stamped by
  the fake when its headers have arrived and named by the escalation's unique title in its text.
- **Data.** One organization, an agent with an API key, one policy (empty condition,
  `require_human`, level 1 → the role `operator`, no channel filter) and three operators, each
  with one contact point added, verified and moved above the account e-mail through the
  contact-point services: an SMS number, a Telegram chat and a Slack user the fakes know. Five
  warm-up escalations go through before the clock starts.
- **Product runs.** Escalations are POSTed by concurrent HTTP/1.1 clients (httpx), as fast as
  daphne answers or at a fixed rate (open loop). Clock start: `Escalation.level_entered_at`,
  set by the create service when the escalation enters level 1, before its commit (the same
  instant as its `created_at`). Clock stop: the fake's receipt of the delivery's first accepted
  request. Duplicates = receipts beyond the first per (escalation, channel); losses =
  (escalation, channel) pairs never received. The bench waits until all have arrived (at most
  120 s after the last create), then 10 s more for late duplicates. Stages come from the
  delivery rows (`created_at`, `sent_at`); queue depth is `LLEN celery` sampled every 0.2 s.
- **Celery baseline.** Right after each product run, its level-entered offsets replayed from the
  bench process: three `bare_post.delay()` per escalation at the same moments, on the same
  workers, broker and fakes. `bare_post` makes the same provider request as our transport on
  one reused httpx client per process and touches no database. Clock start: just before
  `delay()`. The ratio is what AwaitHuman adds to a bare task round trip: the create commit,
  the fan-out, the claim, the answer code, the audit events, the outcome, a new HTTP client
  per request — and the API's own work, which competes with the workers for the CPUs.
- **Fake providers alone.** `bare_post` called from threads of the bench process, closed loop.
- **Profile.** After the workers have stopped, the create service and `delivery_send` run one
  at a time in the bench process; SQL is timed with `connection.execute_wrapper`, the provider
  call by wrapping `notifications.transports.http.post`.
- Percentiles are nearest-rank over all deliveries; all clocks are this machine's wall clock.
"""


def analysis(loads: dict[str, Any], profile: dict[str, Any], workers: int) -> str:
    """What limits the figures, from the figures."""
    burst, paced = loads["burst"]["product"], loads["paced"]["product"]
    tasks, stages = burst["worker_tasks"], burst["stages"]
    send, client_ms = profile["send"], profile["new_httpx_client_ms"]
    if not tasks["mean_ms"]:
        return "No worker task times were found in the workers' logs."
    capacity = workers * 1000 / tasks["mean_ms"]
    offered = burst["creates_per_s"] * len(CHANNELS)
    parts = [
        f"In the burst a delivery takes {tasks['mean_ms']} ms of worker time on average "
        f"(the bare task: {loads['burst']['celery_baseline']['worker_tasks']['mean_ms']} ms), "
        f"so {workers} workers send at most about {capacity:.0f} deliveries/s here, while the "
        f"API offered {offered:.0f}/s ({burst['creates_per_s']} creates/s × 3)."
    ]
    if offered > capacity:
        parts.append(
            "The deliveries queue in Redis while the creates run (queue depth up to "
            f"{burst['queue_depth']['max']}) and the latency is mostly that wait: delivery row → "
            f"receipt p50 {stages['delivery_row_to_receipt']['p50_ms']:,} ms, against "
            f"{stages['level_entered_to_delivery_row']['p50_ms']} ms for the create commit and "
            "the fan-out. The tail is the end of the burst waiting for the backlog to drain, so "
            "the p99 grows with the burst's size; what decides it is the cost of one send."
        )
    if tasks["p50_ms"] and tasks["p50_ms"] > 1.5 * send["wall_ms"]:
        parts.append(
            f"In the burst a delivery takes {tasks['p50_ms'] / send['wall_ms']:.1f}× (p50) what a "
            f"send takes alone ({send['wall_ms']} ms, below): the workers share the CPUs with "
            "daphne creating escalations and with PostgreSQL, so more workers on the same "
            "machine would not add much."
        )
    below = paced["creates_per_s"] * len(CHANNELS) < capacity
    parts.append(
        f"{'Below' if below else 'At'} the workers' capacity ({paced['creates_per_s']} "
        "creates/s × 3) "
        f"the p99 is {(paced['p99_ms'] or 0) / 1000:.2f} s. A send alone takes "
        f"{send['wall_ms']} ms — {send['queries']:g} queries ({send['sql_ms']} ms) and a provider "
        f"call of {send['http_ms']} ms"
        + (
            f", of which about {client_ms} ms is making a new `httpx.Client` per request (its TLS "
            "context loads the CA bundle every time, even for an http:// URL) and "
            f"{max(0.0, send['http_ms'] - client_ms):.1f} ms the request itself."
            if send["http_ms"] >= 0.8 * client_ms
            else "."
        )
    )
    periodic = burst["periodic"]
    if periodic["longest_without_timers_s"] > 5:
        parts.append(
            "While the backlog lasts, beat's periodic tasks wait in the same queue behind the "
            "deliveries and expire there "
            f"({', '.join(f'{n} × `{name}`' for name, n in periodic['expired'].items())}): "
            f"the escalation timers did not run for {periodic['longest_without_timers_s']} s, "
            "so no escalation moved to its next level, was reminded or timed out meanwhile "
            "(the rows keep `next_action_at`, so the timers catch up once a tick gets through)."
        )
    not_claimed = sum(
        count
        for load in loads.values()
        for outcome, count in load["product"]["worker_tasks"]["outcomes"].items()
        if "not claimed" in outcome
    )
    if not_claimed:
        parts.append(
            f"{not_claimed} deliver tasks found their delivery taken already: the sweep "
            "re-queues every delivery still pending 60 s after it was written (it cannot tell a "
            "lost task from one waiting in a long queue), which adds work to a backlog."
        )
    return " ".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.notification_fanout", description=__doc__
    )
    parser.add_argument("--escalations", type=int, default=1000, help="created as fast as can be")
    parser.add_argument("--paced", type=int, default=200, help="created at --rate")
    parser.add_argument("--rate", type=float, default=5.0, help="creates/s of the paced run")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument(
        "--quick", action="store_true", help="100 + 25 escalations; print, write nothing"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.escalations, args.paced = min(args.escalations, 100), min(args.paced, 25)
    args.settle = 3.0 if args.quick else 10.0
    started_at = time.monotonic()

    workdir = Path(tempfile.gettempdir()) / "awaithuman-notification-fanout"
    workdir.mkdir(exist_ok=True)
    (workdir / "beat-schedule").unlink(missing_ok=True)
    env = environment(secrets.token_urlsafe(50))
    env.update(
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
        RATE_LIMIT_DEFAULT="100000000",
        AWAITHUMAN_BASE_URL="http://127.0.0.1:8000",
        PYTHONUNBUFFERED="1",
    )
    import redis

    log("fake providers …")
    providers = FakeProviders(env)
    stack = None
    loads = [Load("burst", args.escalations, None), Load("paced", args.paced, args.rate)]
    try:
        setup_django(env)
        from django.conf import settings

        # The fakes' addresses, for the processes started below and this one's loop baseline.
        env.update(provider_settings(providers.urls))
        for name, value in provider_settings(providers.urls).items():
            setattr(settings, name, value)
        log(f"recreating {DATABASE} …")
        recreate_database(env)
        redis.Redis.from_url(REDIS_URL).flushdb()
        key, organization, agent = seed()
        log(f"daphne, beat, {args.workers} workers …")
        stack, base = start_stack(env, workdir, args.workers)
        log("warm-up …")
        warm = asyncio.run(create_all(base, key, "warmup", 5, 1, None))
        wait_for(providers, len(warm) * len(CHANNELS), time.time() + 60, 1.0)
        for load in loads:
            rate = f"at {load.rate:g}/s" if load.rate else "as fast as the API answers"
            log(f"AwaitHuman: {load.count} escalations × 3 contact points, {rate} …")
            load.run(args, base, key, providers, workdir)
        log("the fake providers alone …")
        loop = run_loop_baseline(args.escalations, args.workers, providers)
        stack.stop()
        stack = None
        log("in-process profile of a create and a send …")
        profile = profile_in_process(organization, agent, 20 if args.quick else 50)
    finally:
        receipts = providers.finish()
        if stack is not None:
            stack.stop()
        # The profile's fan-out queued tasks that no worker is left to run.
        redis.Redis.from_url(REDIS_URL).flushdb()

    figures = {load.name: load.figures(receipts) for load in loads}
    counted, _ = count_receipts(receipts, "loop", loop.pop("started"))
    loop.update(counted, deliveries_per_s=round(counted["expected"] / loop["wall_s"], 1))

    import celery

    from .report import machine

    document = {
        "command": " ".join(["python -m bench.notification_fanout", *(argv or [])]),
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        + (" (quick)" if args.quick else ""),
        "elapsed_s": time.monotonic() - started_at,
        "machine": machine(),
        "code": code_version(),
        "celery": celery.__version__,
        "args": {"workers": args.workers, "clients": args.clients},
        "loads": figures,
        "loop": loop,
        "profile": profile,
        "analysis": analysis(figures, profile, args.workers),
    }
    text = markdown(document)
    print()
    print(text)
    if args.quick:
        log("(--quick: nothing written)")
        return
    (HERE / "RESULTS-notifications.md").write_text(text)
    (HERE / "notification_fanout.json").write_text(json.dumps(document, indent=1) + "\n")
    log(f"wrote {HERE / 'RESULTS-notifications.md'} ({document['elapsed_s']:.0f} s)")


if __name__ == "__main__":
    main(sys.argv[1:])
