"""The embedded default under a burst: ``make run``'s Daphne on SQLite, 200 agents at once.

``python -m bench.embedded_burst [--rounds N]`` seeds a fresh SQLite database in a temporary
folder (``migrate``, ``createorg``, ``createapikey``). Then, for each way of starting Daphne (as
``make run`` does, ``-e tcp:…:backlog=1024``, and with Daphne's default listen backlog, Twisted's
50), it sends rounds of 200 creates, each on a connection of its own opened at the same instant,
as 200 agents starting together would. It counts the requests that got no response (connection
reset or closed) and reports throughput and latency. Writes ``bench/RESULTS-embedded.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
AGENTS = 200
BODY = {
    "kind": "approval",
    "title": "Refund order #4512 for $750",
    "action": {"name": "issue_refund", "arguments": {"order": "4512", "amount": 750}},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _one(port: int, key: str) -> tuple[str, float]:
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(timeout=120) as client:
            response = await client.post(
                f"http://127.0.0.1:{port}/api/v1/escalations",
                json=BODY,
                headers={"Authorization": f"Bearer {key}"},
            )
        return str(response.status_code), time.perf_counter() - started
    except httpx.TransportError as exc:
        return type(exc).__name__, time.perf_counter() - started


async def _burst(port: int, key: str, rounds: int) -> dict:
    outcomes: list[tuple[str, float]] = []
    started = time.perf_counter()
    for _ in range(rounds):
        outcomes += await asyncio.gather(*(_one(port, key) for _ in range(AGENTS)))
    elapsed = time.perf_counter() - started
    counts: dict[str, int] = {}
    for outcome, _ in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    latencies = [seconds * 1e3 for outcome, seconds in outcomes if outcome == "201"]
    return {
        "requests": len(outcomes),
        "created": counts.get("201", 0),
        "no_response": sum(n for outcome, n in counts.items() if not outcome.isdigit()),
        "outcomes": counts,
        "rps": counts.get("201", 0) / elapsed,
        "p50_ms": _percentile(latencies, 0.5),
        "p99_ms": _percentile(latencies, 0.99),
    }


def _serve(argv: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"daphne did not start; see {log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="awaithuman-embedded-"))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "TIMERS_IN_PROCESS", "DJANGO_SETTINGS_MODULE")
    }
    env |= {
        "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        "RATE_LIMIT_DEFAULT": "100000000",  # one key makes every request
        "LOG_LEVEL": "WARNING",
    }
    manage = [str(BIN / "python"), "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)

    def command(*argv: str) -> str:
        done = subprocess.run(
            [*manage, *argv], cwd=ROOT, env=env, check=True, capture_output=True, text=True
        )
        return done.stdout.strip()

    slug = command("createorg", "Burst", "--owner", "owner@burst.test")
    key = command("createapikey", "--org", slug, "--agent", "burst-bot")
    results = {}
    for name, listen in (
        (
            "make run (backlog 1,024)",
            lambda port: ["-e", f"tcp:port={port}:interface=127.0.0.1:backlog=1024"],
        ),
        ("Daphne's default backlog", lambda port: ["-b", "127.0.0.1", "-p", str(port)]),
    ):
        port = _free_port()
        argv = [str(BIN / "daphne"), *listen(port), "awaithuman.asgi:application"]
        server = _serve(argv, env, port, work / f"daphne-{port}.log")
        try:
            results[name] = asyncio.run(_burst(port, key, args.rounds))
        finally:
            server.terminate()
            server.wait(10)
        print(name, json.dumps(results[name]), flush=True)

    lines = [
        "# The embedded default under a burst",
        "",
        f"`python -m bench.embedded_burst --rounds {args.rounds}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()}): Daphne on "
        f"SQLite, {args.rounds} rounds of {AGENTS} creates, each on its own new connection opened "
        "at the same instant. The second row is the baseline: the same server with Daphne's "
        "default listen backlog.",
        "",
        "| server | requests | created | no response | creates/s | p50 / p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['requests']:,} | {r['created']:,} | {r['no_response']:,} | "
            f"{r['rps']:.1f} | {r['p50_ms']:,.0f} / {r['p99_ms']:,.0f} |"
        )
    lines += [
        "",
        "Target (issue #11): the embedded default drops no connection and answers every request.",
        "",
    ]
    (HERE / "RESULTS-embedded.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
