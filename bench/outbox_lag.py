"""Outbox dispatcher lag on PostgreSQL + Redis: ``python -m bench.outbox_lag [--quick]``.

How long a committed escalation waits before the outbox dispatcher hands it to its consumers,
with the README's production processes: a Celery worker (its default prefork pool, one child per
CPU) and beat, against a scratch database (``awaithuman_bench_outbox``) and Redis db 4.

Creates come from this process through the product's service (``escalation_create``, one
transaction each, its after-commit nudge included), paced open-loop at a fixed rate by a few
threads, so the figure is the dispatcher's and not the web server's. The lag of an escalation is
read from the database afterwards: the moment its notification fan-out consumer wrote its first
``Delivery`` minus the escalation's ``created_at`` (stamped just before its commit, so the figure
errs long by the create's own few milliseconds).

Two phases in one run: a trickle of 10 creates/s (the baseline: an idle dispatcher, so the lag is
nudge → task → claim → consumer) and the load of 200 creates/s. Writes ``bench/RESULTS-outbox.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
DATABASE = "awaithuman_bench_outbox"
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
REDIS_URL = "redis://127.0.0.1:6379/4"
THREADS = 4
TARGET_P99_MS = 500


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "awaithuman.settings",
        "DATABASE_URL": DATABASE_URL,
        "REDIS_URL": REDIS_URL,
        "TIMERS_IN_PROCESS": "0",
        "DEBUG": "0",
        "SECRET_KEY": "bench-outbox-" + "k" * 50,
        "LOG_LEVEL": "WARNING",
        # The fan-out really sends, to a backend that drops the message: the worker does the
        # work of a send without an SMTP server's own speed in the figure.
        "EMAIL_BACKEND": "django.core.mail.backends.dummy.EmailBackend",
        "PYTHONUNBUFFERED": "1",
    }


def _prepare() -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{DATABASE}"')
    redis.Redis.from_url(REDIS_URL).flushdb()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=_env(),
        check=True,
    )


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Celery:
    """The README's worker and beat, logging to a scratch folder."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="awaithuman-bench-outbox-"))
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        celery = str(BIN / "celery")
        commands = {
            "worker": [celery, "-A", "awaithuman", "worker", "--loglevel", "INFO",
                       "--without-gossip", "--without-mingle", "--without-heartbeat"],
            "beat": [celery, "-A", "awaithuman", "beat", "--loglevel", "INFO",
                     "--schedule", str(self.folder / "beat-schedule")],
        }  # fmt: skip
        for name, argv in commands.items():
            log = (self.folder / f"{name}.log").open("wb")
            self.processes.append(
                subprocess.Popen(argv, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT)
            )
        self._wait_for("worker.log", " ready.")

    def _wait_for(self, name: str, text: str) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if text in (self.folder / name).read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} never said {text!r}; see {self.folder}")

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _paced_creates(rate: float, seconds: float, create: object) -> tuple[list[int], float]:
    """``rate`` creates a second for ``seconds``, open-loop (each thread keeps its own schedule
    and never waits for the others); the ids and the rate actually reached."""
    from django.db import connection

    total = int(rate * seconds)
    ids: list[int] = []
    lock = threading.Lock()
    started = time.monotonic() + 0.2

    def run(offset: int) -> None:
        try:
            for n in range(offset, total, THREADS):
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                escalation = create(n)  # type: ignore[operator]
                with lock:
                    ids.append(escalation.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(offset,)) for offset in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ids, len(ids) / (time.monotonic() - started)


def _lags_ms(ids: list[int], timeout: float = 180) -> list[float]:
    """Per escalation: its first delivery's ``created_at`` minus its own, once every one of
    ``ids`` has a delivery (the fan-out consumer ran for it)."""
    query = """
        SELECT extract(epoch FROM min(d.created_at) - e.created_at) * 1000
        FROM escalations_escalation e JOIN notifications_delivery d ON d.escalation_id = e.id
        WHERE e.id = ANY(%s) GROUP BY e.id, e.created_at
    """
    deadline = time.monotonic() + timeout
    with psycopg.connect(DATABASE_URL, autocommit=True) as connection:
        while True:
            rows = connection.execute(query, [ids]).fetchall()
            if len(rows) == len(ids):
                return [float(lag) for (lag,) in rows]
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(rows)} of {len(ids)} fanned out in {timeout} s")
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 s of load instead of 15 s")
    parser.add_argument("--rate", type=float, default=200.0, help="creates a second under load")
    args = parser.parse_args()
    seconds = 5.0 if args.quick else 15.0

    _prepare()
    os.environ.update(_env())
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from audit.services import SYSTEM_ACTOR
    from escalations.services import escalation_create
    from tenants.services import agent_create, organization_create, user_get_or_create

    owner = user_get_or_create(email="owner@outbox.bench")
    organization = organization_create(name="Outbox bench", owner=owner, actor=SYSTEM_ACTOR)
    agent = agent_create(organization=organization, name="bot", actor=SYSTEM_ACTOR)

    def create(n: int) -> object:
        return escalation_create(
            organization=organization,
            agent=agent,
            api_key=None,
            data={
                "kind": "approval",
                "title": f"Refund #{n}",
                "action": {"name": "issue_refund", "arguments": {"amount": n % 500}},
                "context": {"reasoning": "bench"},
            },
        )

    celery = Celery()
    celery.start()
    try:
        time.sleep(2)  # beat's first ticks and the worker's pool warm
        idle_ids, idle_rate = _paced_creates(10, 5, create)
        idle = _lags_ms(idle_ids)
        load_ids, load_rate = _paced_creates(args.rate, seconds, create)
        load = _lags_ms(load_ids)
    finally:
        celery.stop()

    def row(name: str, rate: float, lags: list[float]) -> str:
        return (
            f"| {name} | {rate:.0f} | {len(lags):,} | {statistics.median(lags):.0f} "
            f"| {_percentile(lags, 0.95):.0f} | {_percentile(lags, 0.99):.0f} | {max(lags):.0f} |"
        )

    p99 = _percentile(load, 0.99)
    reached = load_rate >= 0.95 * args.rate
    verdict = "met" if p99 <= TARGET_P99_MS and reached else "missed"
    lines = [
        "# Outbox dispatcher lag",
        "",
        f"`python -m bench.outbox_lag{' --quick' if args.quick else ''}` on {platform.node()} "
        f"({os.cpu_count()} CPUs, Python {platform.python_version()}, PostgreSQL and Redis at "
        f"127.0.0.1). The README's Celery worker (prefork, {os.cpu_count()} children) and beat; "
        f"creates through `escalation_create` from {THREADS} paced threads in the bench process; "
        "lag = the fan-out consumer's first `Delivery.created_at` − the escalation's "
        "`created_at`.",
        "",
        "| phase | creates/s reached | escalations | p50 (ms) | p95 (ms) | p99 (ms) | max (ms) |",
        "|---|---|---|---|---|---|---|",
        row("baseline: a trickle, idle dispatcher", idle_rate, idle),
        row(f"load: {args.rate:.0f} creates/s for {seconds:.0f} s", load_rate, load),
        "",
        f"Target: p99 ≤ {TARGET_P99_MS} ms at {args.rate:.0f} creates/s → {verdict} "
        f"(p99 {p99:.0f} ms, {p99 / _percentile(idle, 0.99):.1f}× the trickle's p99; "
        f"{load_rate:.0f} creates/s reached).",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    (HERE / "RESULTS-outbox.md").write_text(report)


if __name__ == "__main__":
    main()
