"""Live-queue fan-out: 1,000 operator websockets on one daphne process with Redis.

``python -m bench.queue_fanout [--sockets 1000] [--decisions 100] [--clients 2]``

Measures, for each decision, the time from its commit to the *last* operator socket receiving
its frame (p50/p99 over decisions), frames lost, and the daphne process's RSS per connection.
The baseline in the same run: a plain ``websockets`` server that broadcasts every message of one
Redis subscription to the same number of sockets (``websockets.broadcast``), timed from PUBLISH.

The decisions are made in this process through ``response_submit`` (as the API or a Celery
worker would): the queue hook reads the row, encodes the frame once and sends it to the group
through channels-redis; daphne forwards it to each socket. Clients run in ``--clients``
processes; all clocks are this machine's wall clock (``time.time_ns``).

Needs PostgreSQL on 127.0.0.1:5432 (user postgres) and Redis; recreates the database
``awaithuman_bench_queue`` and uses Redis db 4.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .queue_clients import Clients, MultiCookieClients, raise_file_limit

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DATABASE = "awaithuman_bench_queue"
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
REDIS_URL = "redis://127.0.0.1:6379/4"
BASELINE_CHANNEL = "bench:queue-fanout"


def log(message: str) -> None:
    print(message, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


# --- The baseline server (a child process) ---------------------------------------------------


async def _baseline_server(port: int) -> None:
    import redis.asyncio as aioredis
    from websockets.asyncio.server import broadcast, serve

    connections: set[Any] = set()

    async def handler(ws: Any) -> None:
        connections.add(ws)
        try:
            await ws.wait_closed()
        finally:
            connections.discard(ws)

    client = aioredis.Redis.from_url(REDIS_URL)
    pubsub = client.pubsub()
    await pubsub.subscribe(BASELINE_CHANNEL)
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None):
        async for message in pubsub.listen():
            if message["type"] == "message":
                broadcast(connections, message["data"].decode())


def baseline_server(port: int) -> None:
    raise_file_limit()
    asyncio.run(_baseline_server(port))


# --- Setup -------------------------------------------------------------------------------------


PUBSUB_SETTINGS = """
from awaithuman.settings import *  # noqa: F403

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},  # noqa: F405
    }
}
"""


def environment(
    secret_key: str, layer: str = "core", workdir: Path | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["DJANGO_SETTINGS_MODULE"] = "awaithuman.settings"
    if layer == "pubsub":
        # The same settings with channels-redis's pub/sub layer (one PUBLISH per group send,
        # fanned out inside each process), written next to the run's logs.
        assert workdir is not None
        (workdir / "queue_pubsub_settings.py").write_text(PUBSUB_SETTINGS)
        env["PYTHONPATH"] = f"{ROOT}:{workdir}"
        env["DJANGO_SETTINGS_MODULE"] = "queue_pubsub_settings"
    env.update(
        DATABASE_URL=DATABASE_URL,
        REDIS_URL=REDIS_URL,
        SECRET_KEY=secret_key,
        DEBUG="0",
        TIMERS_IN_PROCESS="0",
        LOG_LEVEL="WARNING",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_POOL_MAX="40",
    )
    return env


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


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    for path in reversed(env.get("PYTHONPATH", "").split(":")):
        if path and path not in sys.path:
            sys.path.insert(0, path)
    import django

    django.setup()


def seed(operators: int) -> dict[str, Any]:
    """An organization, ``operators`` members each with a session, an agent; all via services
    except the bulk of members and sessions."""
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.auth.hashers import make_password
    from django.contrib.sessions.backends.db import SessionStore

    from audit.services import SYSTEM_ACTOR
    from tenants.ids import new_public_id
    from tenants.models import Membership
    from tenants.services import agent_create, organization_create, user_get_or_create

    User = get_user_model()
    owner = user_get_or_create(email="owner@fanout.test", password=None)
    organization = organization_create(
        name="Fanout", owner=owner, slug="fanout", actor=SYSTEM_ACTOR
    )
    agent = agent_create(organization=organization, name="fanout-bot", actor=SYSTEM_ACTOR)
    users = User.objects.bulk_create(
        [
            User(
                username=f"op{index}@fanout.test",
                email=f"op{index}@fanout.test",
                password=make_password(None),
            )
            for index in range(operators)
        ]
    )
    Membership.objects.bulk_create(
        [
            Membership(
                organization=organization,
                user=user,
                role="operator",
                public_id=new_public_id("mem"),
            )
            for user in users
        ]
    )
    from django.conf import settings

    cookies = []
    for user in users:
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        cookies.append(f"{settings.SESSION_COOKIE_NAME}={session.session_key}")
    return {
        "organization": organization,
        "agent": agent,
        "decider": Membership.objects.get(organization=organization, user=owner),
        "cookies": cookies,
    }


def start_daphne(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(port), "awaithuman.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=raise_file_limit,
    )
    import httpx

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"daphne did not start: {log_path.read_text()[-2000:]}")


# --- Runs --------------------------------------------------------------------------------------


def summarise(
    name: str,
    sent: dict[str, int],
    received: list[tuple[int, int, Any]],
    sockets: int,
    key: Any,
    rss_before: int,
    rss_after: int,
) -> dict[str, Any]:
    last: dict[str, int] = {}
    all_latencies: list[float] = []
    counts: dict[str, int] = dict.fromkeys(sent, 0)
    for at, _index, message in received:
        ident = key(message)
        if ident in sent:
            counts[ident] += 1
            all_latencies.append((at - sent[ident]) / 1e6)
            last[ident] = max(last.get(ident, 0), at)
    to_last = [(last[ident] - sent[ident]) / 1e6 for ident in last]
    expected = len(sent) * sockets
    return {
        "name": name,
        "sockets": sockets,
        "events": len(sent),
        "last_p50_ms": round(statistics.median(to_last), 1) if to_last else None,
        "last_p99_ms": round(percentile(to_last, 0.99), 1) if to_last else None,
        "last_max_ms": round(max(to_last), 1) if to_last else None,
        "each_p50_ms": round(statistics.median(all_latencies), 1) if all_latencies else None,
        "lost": expected - sum(counts.values()),
        "rss_per_connection_kib": round((rss_after - rss_before) / sockets, 1),
        "rss_before_mib": round(rss_before / 1024, 1),
        "rss_after_mib": round(rss_after / 1024, 1),
    }


def run_awaithuman(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    from django.db import transaction

    from escalations.services import escalation_create, response_submit

    data = seed(args.sockets)
    # Created before anyone connects: only the decisions are measured, not a burst of creations.
    escalations = [
        escalation_create(
            organization=data["organization"],
            agent=data["agent"],
            api_key=None,
            data={
                "kind": "approval",
                "title": f"Fan-out {index}",
                "action": {"name": "issue_refund", "arguments": {"order": index, "amount": 750}},
            },
        )
        for index in range(args.decisions)
    ]
    port = free_port()
    daphne = start_daphne(env, port, workdir / "daphne.log")
    try:
        time.sleep(1)
        rss_before = rss_kib(daphne.pid)
        origin = f"http://127.0.0.1:{port}"
        # Every socket is its own operator (its own session and membership).
        clients = MultiCookieClients(
            args.clients, f"ws://127.0.0.1:{port}/ws/queue/", origin, data["cookies"], args.sockets
        )
        clients.wait_ready()
        time.sleep(2)
        rss_after = rss_kib(daphne.pid)
        log(f"  {args.sockets} sockets open; daphne RSS {rss_before} → {rss_after} KiB")

        committed: dict[str, int] = {}
        for escalation in escalations:

            def mark(public_id: str = escalation.public_id) -> None:
                committed[public_id] = time.time_ns()

            with transaction.atomic():
                # Registered first, so it runs first after commit: the clock starts at commit.
                transaction.on_commit(mark)
                response_submit(
                    escalation=escalation,
                    membership=data["decider"],
                    outcome="approve",
                    channel="bench",
                )
            time.sleep(args.interval)
        time.sleep(3)
        received = clients.finish()
    finally:
        daphne.send_signal(signal.SIGTERM)
        daphne.wait(timeout=10)

    def decided_id(message: Any) -> str | None:
        if '"event":"decided"' not in message:
            return None
        return json.loads(message)["escalation"]["id"]

    return summarise(
        "AwaitHuman QueueConsumer (channels-redis)",
        committed,
        received,
        args.sockets,
        decided_id,
        rss_before,
        rss_after,
    )


def run_baseline(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import redis

    port = free_port()
    ctx = mp.get_context("spawn")
    server = ctx.Process(target=baseline_server, args=(port,), daemon=True)
    server.start()
    time.sleep(1.5)
    rss_before = rss_kib(server.pid)
    clients = Clients(args.clients, f"ws://127.0.0.1:{port}/", [[]] * args.clients, args.sockets)
    clients.wait_ready()
    time.sleep(2)
    rss_after = rss_kib(server.pid)
    publisher = redis.Redis.from_url(REDIS_URL)
    sent: dict[str, int] = {}
    filler = "x" * 300  # about the size of a queue frame
    for index in range(args.decisions):
        ident = f"b{index}"
        sent[ident] = time.time_ns()
        publisher.publish(BASELINE_CHANNEL, json.dumps({"id": ident, "pad": filler}))
        time.sleep(args.interval)
    time.sleep(3)
    received = clients.finish()
    server.terminate()
    server.join(timeout=10)
    return summarise(
        "baseline: websockets.broadcast from one Redis subscription",
        sent,
        received,
        args.sockets,
        lambda message: json.loads(message)["id"],
        rss_before,
        rss_after,
    )


def markdown(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"### Live-queue fan-out ({args.sockets} sockets, {args.decisions} decisions, "
        f"{args.interval * 1000:.0f} ms apart, 1 server process, Redis)",
        "",
        "| server | commit → last socket p50 | p99 | max | frames lost | RSS per connection |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        lines.append(
            f"| {result['name']} | {result['last_p50_ms']} ms | {result['last_p99_ms']} ms | "
            f"{result['last_max_ms']} ms | {result['lost']} | "
            f"{result['rss_per_connection_kib']} KiB |"
        )
    lines.append("")
    lines.append("Targets: p99 ≤ 100 ms, zero lost, ≤ 32 KiB per connection.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_fanout", description=__doc__)
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between decisions")
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--layer", choices=["core", "pubsub"], default="core", help="channels-redis layer"
    )
    args = parser.parse_args(argv)
    raise_file_limit()

    workdir = Path(tempfile.gettempdir()) / "awaithuman-queue-fanout"
    workdir.mkdir(exist_ok=True)
    env = environment(secrets.token_urlsafe(50), args.layer, workdir)
    log(f"recreating {DATABASE} …")
    recreate_database(env)
    setup_django(env)
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()

    results = []
    log("AwaitHuman QueueConsumer …")
    results.append(run_awaithuman(args, env, workdir))
    results[-1]["name"] = f"AwaitHuman QueueConsumer (channels-redis {args.layer} layer)"
    log(json.dumps(results[-1]))
    log("baseline …")
    results.append(run_baseline(args, workdir))
    log(json.dumps(results[-1]))
    print()
    print(markdown(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
