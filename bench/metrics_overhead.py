"""What the metrics cost on the create path: the same server with and without them, in one run.

``python -m bench.metrics_overhead [--rounds N] [--creates N] [--concurrency N]`` recreates the
``awaithuman_bench_metrics`` database on the machine's PostgreSQL (``DATABASE_URL``'s server,
default ``postgres://postgres@127.0.0.1:5432``) and uses Redis (``REDIS_URL``, default
``redis://127.0.0.1:6379/14``), as production does. It starts two ``awaithuman serve`` processes
side by side on that database: the baseline with ``METRICS_ENABLED=0``, and one with metrics on in
their production form (multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``). Rounds alternate between
the two (baseline first in odd rounds, second in even ones) so that drift on a shared machine
touches both alike; each round sends ``--creates`` POST /api/v1/escalations from
``--concurrency`` keep-alive clients. Reported: median creates/s and p50/p99 latency over all
rounds, and the ratios. Writes ``bench/RESULTS-operations.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
DATABASE = "awaithuman_bench_metrics"
BODY = {
    "kind": "approval",
    "title": "Refund order #4512 for $750",
    "action": {"name": "issue_refund", "arguments": {"order": "4512", "amount": 750}},
    "context": {"reasoning": "The customer was charged twice."},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _round(base: str, key: str, creates: int, concurrency: int) -> dict[str, object]:
    latencies: list[float] = []
    remaining = iter(range(creates))
    headers = {"Authorization": f"Bearer {key}"}

    async def agent(client: httpx.AsyncClient) -> None:
        for _ in remaining:
            started = time.perf_counter()
            response = await client.post(f"{base}/api/v1/escalations", json=BODY, headers=headers)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 201, response.text

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        started = time.perf_counter()
        await asyncio.gather(*(agent(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"rps": creates / elapsed, "latencies": latencies}


DIRECT = """
import os, statistics, time, django
django.setup()
from awaithuman import metrics
runs = []
for _ in range(5):
    started = time.perf_counter()
    for _ in range(20000):
        metrics.REQUEST_DURATION.labels("api/v1/escalations", "POST", "201").observe(0.05)
        metrics.ESCALATIONS_CREATED.labels("require_human").inc()
    runs.append((time.perf_counter() - started) / 20000 * 1e6)
print(statistics.median(runs))
"""


def _direct_cost(env: dict[str, str], metrics_dir: Path) -> float:
    """Microseconds per create of the two metric calls a create makes, in multiprocess mode
    (each looks its labelled child up, as the code does)."""
    done = subprocess.run(
        [str(BIN / "python"), "-c", DIRECT],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "awaithuman.settings",
             "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return float(done.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    # The server of DATABASE_URL (its database part dropped), or the machine's.
    configured = os.environ.get("DATABASE_URL", "")
    server_url = (
        configured.rsplit("/", 1)[0]
        if configured.startswith("postgres")
        else "postgres://postgres@127.0.0.1:5432"
    )
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{DATABASE}"')
    work = Path(tempfile.mkdtemp(prefix="awaithuman-metrics-bench-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE",)}
    env |= {
        "DATABASE_URL": f"{server_url}/{DATABASE}",
        "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14"),
        "RATE_LIMIT_DEFAULT": "100000000",  # one key makes every request
        "LOG_LEVEL": "WARNING",
        "SECRET_KEY": "bench-" + "x" * 60,
        "AWAITHUMAN_DATA_DIR": str(work),
    }
    python = str(BIN / "python")

    def command(*argv: str) -> str:
        done = subprocess.run(
            [python, "-m", "awaithuman", *argv],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        return done.stdout.strip()

    command("migrate")
    slug = command("manage", "createorg", "Bench", "--owner", "owner@bench.test")
    key = command("manage", "createapikey", "--org", slug, "--agent", "bench-bot")

    metrics_dir = work / "metrics"
    metrics_dir.mkdir()
    configurations = {
        "metrics off (baseline)": {"METRICS_ENABLED": "0"},
        "metrics on (multiprocess)": {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
    }
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for name, extra in configurations.items():
            port = _free_port()
            log = (work / f"serve-{port}.log").open("w")
            process = subprocess.Popen(
                [python, "-m", "awaithuman", "serve", "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT, env={**env, **extra}, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            servers[name] = (process, base)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not start; see {log.name}")
                time.sleep(0.2)

        names = list(configurations)
        results: dict[str, list[dict[str, object]]] = {name: [] for name in names}
        # One warm-up round each (connection pools, first imports), not counted.
        for name in names:
            asyncio.run(_round(servers[name][1], key, 50, args.concurrency))
        for number in range(args.rounds):
            order = names if number % 2 == 0 else names[::-1]
            for name in order:
                outcome = asyncio.run(_round(servers[name][1], key, args.creates, args.concurrency))
                results[name].append(outcome)
                print(f"round {number + 1} {name}: {outcome['rps']:.1f} creates/s", flush=True)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(10)

    summary = {}
    for name, rounds in results.items():
        latencies = [latency for r in rounds for latency in r["latencies"]]  # type: ignore[attr-defined]
        summary[name] = {
            "rps": statistics.median(r["rps"] for r in rounds),  # type: ignore[misc]
            "p50": _percentile(latencies, 0.5) * 1000,
            "p99": _percentile(latencies, 0.99) * 1000,
        }
    direct = _direct_cost(env, metrics_dir)
    shutil.rmtree(work, ignore_errors=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    base, measured = summary[names[0]], summary[names[1]]
    # Each round runs both servers back to back: the median of the per-round ratios is the
    # figure least moved by drift on a shared machine.
    throughput = statistics.median(
        float(on["rps"]) / float(off["rps"])  # type: ignore[arg-type]
        for off, on in zip(results[names[0]], results[names[1]], strict=True)
    )
    overhead = 1 - throughput
    lines = [
        "# Operations: the cost of metrics on the create path",
        "",
        f"`python -m bench.metrics_overhead --rounds {args.rounds} --creates {args.creates} "
        f"--concurrency {args.concurrency}` on {when}, "
        f"{platform.node()} ({os.cpu_count()} CPUs shared with other work, Python "
        f"{platform.python_version()}), PostgreSQL and Redis on the same machine.",
        "",
        "Method: two `awaithuman serve` processes (Uvicorn, one worker each) on one database, "
        "started side by side from the same code: the baseline with `METRICS_ENABLED=0`, the "
        "other with metrics on in multiprocess mode (`PROMETHEUS_MULTIPROC_DIR`, as in "
        "production: every sample is written to a memory-mapped file). Rounds alternate between "
        f"them; each round is {args.creates} creates from {args.concurrency} keep-alive clients. "
        "Creates/s is the median over rounds; latencies are over all creates; the ratio is the "
        "median of each round's ratio (both servers measured back to back).",
        "",
        "| server | creates/s (median) | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for name, figures in summary.items():
        lines.append(
            f"| {name} | {figures['rps']:.1f} | {figures['p50']:.1f} | {figures['p99']:.1f} |"
        )
    lines += [
        "",
        "Throughput with metrics / without, median of the per-round ratios: "
        f"**{throughput:.3f}** (overhead {overhead:+.1%}); "
        f"p50 latency ratio {measured['p50'] / base['p50']:.3f}.",
        "",
        "The HTTP ratio carries the noise of a machine whose CPUs other work shares (rounds of "
        "the same server differ by more than the metrics cost): read it with the direct "
        "figure below, which isolates what metrics add.",
        "",
        "Target (issue #17): at most 5% overhead. "
        + ("Met." if overhead <= 0.05 else "**Not met** in this run."),
        "",
        "What a create costs the metrics: the request-latency histogram (one observation under "
        "the route pattern) and the created counter (after commit). The pending, outbox and "
        "timer figures are read from the database only when /metrics is scraped, so they cost "
        "the create path nothing.",
        "",
        "The same cost measured directly, without the noise of a shared machine: those two "
        f"calls in multiprocess mode take **{direct:.1f} µs** per create (median of 5 runs of "
        f"20,000), that is {direct / (1e6 / base['rps']):.2%} of the baseline's time per "
        f"create at its throughput ({1000 / base['rps']:.1f} ms of wall time per create).",
        "",
    ]
    (HERE / "RESULTS-operations.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
