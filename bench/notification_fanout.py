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
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import shared_task

from .notification_measure import (
    QueueDepth,
    Receipt,
    WorkerLogs,
    count_receipts,
    latency_figures,
    ms,
    profile_in_process,
)
from .notification_providers import CHANNELS, OPERATORS, FakeProviders, provider_settings
from .notification_report import analysis, code_version, markdown
from .queue_fanout import ADMIN_URL, BIN, ROOT, environment, log, percentile, setup_django

HERE = Path(__file__).resolve().parent
DATABASE = "awaithuman_bench_notifications"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
REDIS_URL = "redis://127.0.0.1:6379/5"
WAIT_AFTER_LAST_CREATE_S = 120.0


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
    from notifications.contact_points import (
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


# --- Creating escalations --------------------------------------------------------------------


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

        logs, depth, meter = WorkerLogs(workdir, args.workers), QueueDepth(REDIS_URL), CpuMeter()
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
        logs, depth, meter = WorkerLogs(workdir, args.workers), QueueDepth(REDIS_URL), CpuMeter()
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
