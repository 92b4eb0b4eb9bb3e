"""The policy-suggestion miner on PostgreSQL: ``python -m bench.suggestions [--quick]``.

One organization gets 1,000,000 escalations (50,000 with ``--quick``) from
``bench.seed_history.seed_escalations``, all created within the miner's default 30-day window,
plus a second organization with a tenth as many (its rows sit in the same table and must cost
the first nothing but index work). Then, each three times, the median kept:

- **baseline**: ``SELECT agent_id, count(*) … GROUP BY agent_id`` over the organization's
  window: one scan of the rows the miner reads, with no JSON work at all;
- **miner, default options** (30 days, support 10, confidence 100 %): on this history people
  disagree inside every numeric range (refunds over $500 are mostly, not always, rejected), so
  the full-confidence rules found are few;
- **miner, confidence 50 %**: many rules pass, so every step runs for each (candidate bounds,
  the evaluation of each, the dry run over the whole window, the contradicted links and the
  median wait).

Runs against a scratch database (``awaithuman_bench_suggestions``). Writes
``bench/RESULTS-suggestions.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATABASE = "awaithuman_bench_suggestions"
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
REPEATS = 3
BUDGET_SECONDS = 60


def _prepare_database() -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{DATABASE}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=HERE.parent,
        env={**os.environ, "DATABASE_URL": DATABASE_URL},
        check=True,
    )


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    """The median wall time of ``REPEATS`` runs, and the last run's result."""
    times, result = [], None
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 50_000 if args.quick else 1_000_000

    _prepare_database()
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ.pop("REDIS_URL", None)
    os.environ["TIMERS_IN_PROCESS"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "awaithuman.settings")
    sys.path.insert(0, str(HERE.parent))
    import django

    django.setup()
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from audit.services import SYSTEM_ACTOR
    from bench.seed_history import seed_escalations
    from escalations.models import Escalation
    from suggestions.mining import MiningOptions, mine
    from tenants.services import organization_create, user_get_or_create

    owner = user_get_or_create(email="bench@suggestions.test")
    organization = organization_create(name="Bench", owner=owner, slug="bench", actor=SYSTEM_ACTOR)
    other = organization_create(name="Other", owner=owner, slug="other", actor=SYSTEM_ACTOR)
    started = time.perf_counter()
    seed_escalations(organization, count, days=29)
    seed_escalations(other, count // 10, days=29, seed=1)
    seed_seconds = time.perf_counter() - started
    window = Escalation.objects.filter(
        organization=organization, created_at__gte=timezone.now() - timedelta(days=30)
    )
    rows = window.count()
    decided = window.exclude(status="pending").count()
    human = window.filter(status__in=["approved", "rejected"], decided_by__type="user").count()
    load = os.getloadavg()[0]
    print(f"seeded {count:,} + {count // 10:,} rows in {seed_seconds:.0f} s", flush=True)

    def baseline() -> list[tuple[int, int]]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT agent_id, count(*) FROM escalations_escalation"
                " WHERE organization_id = %s AND created_at >= now() - interval '30 days'"
                " GROUP BY agent_id",
                [organization.pk],
            )
            return cursor.fetchall()

    base_seconds, groups = _timed(baseline)
    assert sum(n for _, n in groups) == rows, (groups, rows)
    print(f"baseline: {base_seconds:.2f} s", flush=True)
    results = []
    for label, options in (
        ("miner, default options (support 10, confidence 100 %)", MiningOptions()),
        ("miner, confidence 50 %", MiningOptions(min_confidence=0.5)),
    ):
        connection.queries_log.clear()
        seconds, found = _timed(partial(mine, organization=organization, options=options))
        results.append((label, seconds, found))
        print(f"{label}: {seconds:.2f} s, {len(found)} suggestions", flush=True)
        for suggestion in found:
            print(f"  {suggestion.summary} -> {suggestion.outcome_label}", flush=True)

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server_version = cursor.fetchone()[0].split()[0]
    machine = (
        f"{platform.node()} ({os.cpu_count()} CPUs, 24 GiB RAM, Python "
        f"{platform.python_version()}, PostgreSQL {server_version} on 127.0.0.1; "
        "the machine is shared with other work running at the same time, so the figures are "
        "noisy: compare the ratios)"
    )
    lines = [
        "# Policy suggestions: the miner over a million decisions",
        "",
        f"Machine: {machine}. Generated by `python -m bench.suggestions"
        f"{' --quick' if args.quick else ''}` (part of `make bench`).",
        "",
        "## Method",
        "",
        f"`bench.seed_history.seed_escalations` inserts {count:,} escalations into one",
        f"organization (and {count // 10:,} into another, same table) in {seed_seconds:.0f} s, all",
        f"created within the last 29 days: {rows:,} rows in the miner's 30-day window, of which",
        f"{decided:,} are decided and {human:,} were approved or rejected by a person (the rest:",
        "policies, timeouts, cancels, answered questions). The miner reads all of them: the",
        "human decisions to mine, the whole window for the dry runs. Each measurement is the",
        "median of "
        f"{REPEATS} runs in one process, warm cache; the load average was {load:.1f} on the",
        "2 cores when the measurements began.",
        "",
        "The baseline is the cheapest query that reads the same rows: `SELECT agent_id, count(*)",
        "… WHERE organization_id = … AND created_at >= now() - 30 days GROUP BY agent_id`.",
        "",
        "## Results",
        "",
        f"Budget: {BUDGET_SECONDS} s for the miner on 1,000,000 decisions.",
        "",
        "| run | wall time | vs baseline | suggestions | within budget |",
        "|---|---:|---:|---:|---|",
        f"| baseline (GROUP BY agent_id) | {base_seconds:.2f} s | ×1.0 | – | – |",
    ]
    for label, seconds, found in results:
        lines.append(
            f"| {label} | {seconds:.2f} s | ×{seconds / base_seconds:.1f} | {len(found)} | "
            f"{'yes' if seconds < BUDGET_SECONDS else 'NO'} |"
        )
    lines += ["", "Suggestions found at confidence 50 % (a sample of what the page shows):", ""]
    for suggestion in results[-1][2][:8]:
        dry_run = suggestion.dry_run
        lines.append(
            f"- {suggestion.summary} ({round(suggestion.confidence * 100)} %) → "
            f"{suggestion.outcome_label}; dry run: {dry_run.matched:,} matched, "
            f"{dry_run.contradicted:,} decided the other way"
        )
    lines += [
        "",
        "Where the time goes: every step is a `GROUP BY` agent, action name (and status) over",
        "the window, with the argument extracted from `action` (jsonb) and cast; nothing is",
        "loaded row by row into Python. One scan gives the human-decision groups (their counts,",
        "waits and latest escalation); per numeric argument, one scan finds each outcome's",
        "extremes, one the clean bounds where the outcomes overlap, and one per kind of bound",
        "evaluates the candidates (both outcomes in one query). For the suggestions found, per",
        "argument: the dry run over the whole window, the median wait (`percentile_cont`) and",
        "the newest contradicted escalations (`row_number()` over each group). The cost grows",
        "with the rows in the window times the numeric arguments of the mined actions (here",
        "two: `order` and `amount` of `issue_refund`), not with the number of suggestions.",
        "",
    ]
    (HERE / "RESULTS-suggestions.md").write_text("\n".join(lines))
    print("wrote bench/RESULTS-suggestions.md", flush=True)


if __name__ == "__main__":
    main()
