"""History search and downloads on PostgreSQL: ``python -m bench.history [--quick] [--rows N]``.

(1) Search latency. One organization holds ``--rows`` escalations (default 1,000,000; 50,000
    with ``--quick``), seeded by ``bench.seed_history.seed_escalations`` next to a second
    organization with a tenth as many (so the indexes serve more than one tenant). Each history
    query (filters only, ``q`` only, ``q`` with filters) builds its first page exactly as the API
    and the console do (``history_queryset`` + ``history_page``, 50 rows with their agents),
    ``ROUNDS`` times; p50 and p95 are reported against a baseline measured the same way in the
    same run: the bare indexed newest-first page,
    ``SELECT * … WHERE organization_id = … ORDER BY created_at DESC, id DESC LIMIT 50``.
(2) Download memory. A CSV download of an organization with 100,000 escalations (10,000 with
    ``--quick``) runs in its own process (``history.export_lines`` through the same
    ``streaming.pieces`` the response uses, written to /dev/null); its peak RSS is its own
    high-water mark (``VmHWM``), against the same download of an organization with none
    (the baseline: interpreter, Django and the app) and one with a tenth of the rows.

Runs against a scratch database (``awaithuman_bench_history``). Writes
``bench/RESULTS-history.md``.
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
from datetime import timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATABASE = "awaithuman_bench_history"
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
ROUNDS = 40
TARGET_P95_MS = 200

# Runs one CSV download in a fresh process, then reports the process's own peak RSS (``VmHWM``:
# ``ru_maxrss`` would carry this driver's size across ``exec``).
_MEASURED = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "awaithuman.settings")
import django
django.setup()
from escalations import history
from escalations.streaming import pieces
from tenants.models import Organization
organization = Organization.objects.get(slug=sys.argv[1])
filters = history.HistoryFilters()
lines = history.export_lines(history.history_queryset(organization, filters), "csv")
size = 0
with open(os.devnull, "wb") as sink:
    for piece in pieces(lines):
        size += len(piece)
        sink.write(piece)
print("bytes", size, file=sys.stderr)
with open("/proc/self/status") as status:
    print(next(line for line in status if line.startswith("VmHWM")), file=sys.stderr)
"""


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


def _download(slug: str) -> tuple[float, float, int]:
    """Peak RSS (MiB), wall time (s) and size (bytes) of one organization's CSV download."""
    started = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-c", _MEASURED, slug],
        cwd=HERE.parent,
        env={**os.environ, "DATABASE_URL": DATABASE_URL},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - started
    output = finished.stderr.splitlines()
    peak = next(line for line in output if line.startswith("VmHWM"))
    size = next(line for line in output if line.startswith("bytes"))
    return int(peak.split()[1]) / 1024, elapsed, int(size.split()[1])


def _timed(run: Callable[[], Any], rounds: int) -> tuple[float, float, int]:
    """p50 and p95 (ms, nearest rank) of ``rounds`` runs after two warm-ups; rows of the last."""
    for _ in range(2):
        run()
    samples = []
    rows = 0
    for _ in range(rounds):
        started = time.perf_counter()
        rows = run()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    p95 = samples[max(0, -(-95 * len(samples) // 100) - 1)]
    return statistics.median(samples), p95, rows


def _organization(slug: str) -> Any:
    from audit.services import SYSTEM_ACTOR
    from tenants.services import organization_create, user_get_or_create

    owner = user_get_or_create(email=f"owner@{slug}.bench")
    return organization_create(name=slug.title(), owner=owner, slug=slug, actor=SYSTEM_ACTOR)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="50,000 rows, 10,000 to download")
    parser.add_argument("--rows", type=int, help="escalations in the searched organization")
    args = parser.parse_args()
    rows = args.rows or (50_000 if args.quick else 1_000_000)
    export_rows = 10_000 if args.quick else 100_000

    _prepare_database()
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ.pop("REDIS_URL", None)
    os.environ["TIMERS_IN_PROCESS"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "awaithuman.settings")
    sys.path.insert(0, str(HERE.parent))
    import django

    django.setup()
    from django.db import connection
    from django.utils import timezone

    from bench.seed_history import seed_escalations
    from escalations import history
    from escalations.models import Policy

    started = time.perf_counter()
    searched = _organization("searched")
    seed_escalations(searched, rows, seed=1)
    seed_escalations(_organization("neighbour"), rows // 10, seed=2)
    seed_escalations(_organization("download"), export_rows, seed=3)
    seed_escalations(_organization("tenth"), export_rows // 10, seed=4)
    _organization("empty")
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE escalations_escalation")
    seed_seconds = time.perf_counter() - started
    total = rows + rows // 10 + export_rows + export_rows // 10

    agent = searched.agents.get(name="devops-bot").public_id
    member = searched.memberships.filter(role="operator").order_by("id").first()
    policy = Policy.objects.get(organization=searched, name="Never delete main").public_id
    week_ago = (timezone.now() - timedelta(days=7)).isoformat()
    month_ago = (timezone.now() - timedelta(days=30)).isoformat()
    queries: list[tuple[str, str, dict[str, str]]] = [
        ("filter", "status=rejected", {"status": "rejected"}),
        ("filter", "agent (devops-bot)", {"agent": agent}),
        ("filter", "decided_by=member + channel=slack",
         {"decided_by": member.public_id, "channel": "slack"}),
        ("filter", "policy (rare: 1 in ~300)", {"policy": policy}),
        ("filter", "created in the last 7 days + priority=urgent",
         {"created_after": week_ago, "priority": "urgent"}),
        ("q", "q=refund (common word)", {"q": "refund"}),
        ("q", 'q="charged twice" (phrase)', {"q": '"charged twice"'}),
        ("q", "q=manager (comments)", {"q": "manager"}),
        ("q", "q=12345 (an order number: rare)", {"q": "12345"}),
        ("q", "q=nosuchword (no match)", {"q": "nosuchword"}),
        ("q + filter", "q=refund + status=rejected", {"q": "refund", "status": "rejected"}),
        ("q + filter", "q=damaged + decided in the last 30 days",
         {"q": "damaged", "decided_after": month_ago}),
        ("q + filter", "q=newsletter + channel=email", {"q": "newsletter", "channel": "email"}),
        ("q + filter", "q=stale + decided_by=timeout", {"q": "stale", "decided_by": "timeout"}),
    ]  # fmt: skip

    def baseline() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT * FROM escalations_escalation WHERE organization_id = %s "
                "ORDER BY created_at DESC, id DESC LIMIT 50",
                [searched.pk],
            )
            return len(cursor.fetchall())

    def first_page(values: dict[str, str]) -> Callable[[], int]:
        def run() -> int:
            filters = history.HistoryFilters.parse(values, blank_is_absent=False)
            escalations = history.history_queryset(searched, filters).select_related("agent")
            return len(history.history_page(escalations, cursor=None).escalations)

        return run

    base_p50, base_p95, _ = _timed(baseline, ROUNDS)
    measured = []
    for group, label, values in queries:
        p50, p95, found = _timed(first_page(values), ROUNDS)
        measured.append((group, label, p50, p95, found))
        print(f"{label}: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({found} rows)", flush=True)

    downloads = {
        name: _download(name) for name in ("empty", "tenth", "download")
    }  # slug -> (MiB, s, bytes)
    counts = {"empty": 0, "tenth": export_rows // 10, "download": export_rows}

    worst = max(p95 for _, _, _, p95, _ in measured)
    machine = (
        f"{platform.node()} ({os.cpu_count()} cores, 24 GiB, Python "
        f"{platform.python_version()}, PostgreSQL on 127.0.0.1; shared with other work)"
    )
    command = f"python -m bench.history{' --quick' if args.quick else ''}"
    if args.rows:
        command += f" --rows {args.rows}"
    lines = [
        "# History: search and downloads",
        "",
        f"Machine: {machine}. Generated by `{command}` (part of `make bench`).",
        f"Seeding {total:,} escalations in 5 organizations with `bench.seed_history` (one",
        f"set-based INSERT each, then VACUUM ANALYZE) took {seed_seconds:.0f} s.",
        "",
        f"## First page of a history query, {rows:,} escalations in the organization",
        "",
        "Each query builds its first page as the API and the console do (`history_queryset`,",
        f"`history_page`: 50 rows and their agents), {ROUNDS} times after two warm-ups;",
        "nearest-rank percentiles. Baseline, same run: the bare indexed newest-first page",
        "(`SELECT * … WHERE organization_id = … ORDER BY created_at DESC, id DESC LIMIT 50`).",
        f"Target: p95 ≤ {TARGET_P95_MS} ms at 1,000,000 rows.",
        "",
        "| kind | query | rows | p50 | p95 | p95 vs baseline |",
        "|---|---|---:|---:|---:|---:|",
        f"| baseline | bare newest-first page | 50 | {base_p50:.1f} ms | {base_p95:.1f} ms "
        "| ×1.0 |",
    ]
    for group, label, p50, p95, found in measured:
        lines.append(
            f"| {group} | {label} | {found} | {p50:.1f} ms | {p95:.1f} ms | ×{p95 / base_p95:.1f} |"
        )
    lines += [
        "",
        f"Slowest p95: {worst:.1f} ms "
        f"({'within' if worst <= TARGET_P95_MS else 'over'} the {TARGET_P95_MS} ms target"
        f"{'' if rows >= 1_000_000 else f' — note: measured at {rows:,} rows, not 1,000,000'}).",
        "",
        "How: every query reads the organization's newest rows through the",
        "`(organization, -created_at, -id)` index and stops at 50 matches, unless the planner",
        "expects a GIN bitmap on `search_document` to be cheaper (rare words). Filters on JSON",
        "keys (who decided, the policy) depend on migration 0007's extended statistics: without",
        "them the planner took `decided_by=member + channel=slack` to match almost nothing and",
        "scanned and sorted the whole organization (819 ms p95 at 1,000,000 rows in an earlier",
        "run of this bench). Limit: a filter matching a tiny share of the rows, with no index of",
        "its own, reads newest rows until it has a page: its cost grows as matches get rarer.",
        "",
        "## Peak memory of a CSV download",
        "",
        "Each download runs in its own process (`history.export_lines` over",
        "`history_queryset`, regrouped by `streaming.pieces` as the response does, written to",
        "/dev/null); peak RSS is the process's own high-water mark (`VmHWM`). Baseline: the same",
        "download of an organization with no escalations, in the same run. Flat memory: the full",
        "row stays near the tenth.",
        "",
        "| escalations | peak RSS | vs baseline (0) | wall time | CSV size |",
        "|---:|---:|---:|---:|---:|",
    ]
    base_rss = downloads["empty"][0]
    for name in ("empty", "tenth", "download"):
        rss, seconds, size = downloads[name]
        lines.append(
            f"| {counts[name]:,} | {rss:.0f} MiB | ×{rss / base_rss:.2f} | {seconds:.1f} s | "
            f"{size / 1e6:.1f} MB |"
        )
    lines.append("")
    (HERE / "RESULTS-history.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
