"""The console table and ``bench/RESULTS.md`` from the figures in ``results.json``."""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
from pathlib import Path

KIB_TARGET = 16.0
WAKE_TARGET_MS = 10.0
BURST_TARGET_MS = 1000.0
SUSTAINED_TARGET = 0.60
HEALTHZ_TARGET = 2.0


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:
        return "?"


def machine() -> dict:
    model = "?"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    pg = redis_v = "?"
    try:
        import psycopg
        import redis

        from .server import PG_ADMIN, REDIS_URL

        with psycopg.connect(PG_ADMIN) as conn:
            pg = conn.execute("SHOW server_version").fetchone()[0]
        redis_v = redis.Redis.from_url(REDIS_URL).info("server")["redis_version"]
    except Exception as exc:  # the versions are informative only
        pg = redis_v = f"? ({type(exc).__name__})"
    return {
        # not `nproc`: it counts only the CPUs this (pinned) process may use
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "django": _version("django"),
        "channels": _version("channels"),
        "daphne": _version("daphne"),
        "uvicorn": _version("uvicorn"),
        "uvloop": _version("uvloop"),
        "httptools": _version("httptools"),
        "psycopg": _version("psycopg"),
        "redis_py": _version("redis"),
        "postgresql": pg,
        "redis": redis_v,
    }


def _f(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None, digits: int = 2) -> str:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return "–"
    return f"{a / b:.{digits}f}×"


def _ok(flag: bool) -> str:
    return "met" if flag else "**missed**"


def _servers(section: dict) -> list[str]:
    return [k for k in ("daphne", "uvicorn") if k in section]


def rows(doc: dict) -> list[tuple[str, ...]]:
    """(figure, server, AwaitHuman, baseline, ratio, target) rows: console table and markdown."""
    out = []
    sc = doc["scenarios"]
    burst = sc.get("burst", {})
    for kind in _servers(burst):
        r = burst[kind]
        b, base = r["burst"]["product"], r["burst"]["baseline"]
        out.append(
            (
                f"(a) burst {r['agents']} creates: all acked p50 / p99 ms",
                kind,
                f"{_f(b['p50_ms'], 0)} / {_f(b['p99_ms'], 0)}, {b['errors']} err",
                f"{_f(base['p50_ms'], 0)} / {_f(base['p99_ms'], 0)}, {base['errors']} err",
                f"{_ratio(b['p50_ms'], base['p50_ms'])} / {_ratio(b['p99_ms'], base['p99_ms'])}",
                f"p99 ≤ 1 s, 0 err: {_ok(b['p99_ms'] <= BURST_TARGET_MS and b['errors'] == 0)}",
            )
        )
    for kind in _servers(burst):
        r = burst[kind]
        s, sb = r["sustained"]["product"], r["sustained"]["baseline"]
        out.append(
            (
                f"(a) sustained creates @{r['sustained']['concurrency']}: req/s",
                kind,
                f"{_f(s['rps'], 0)} (p99 {_f(s['p99_ms'], 0)} ms), {s['errors']} err",
                f"{_f(sb['rps'], 0)} (p99 {_f(sb['p99_ms'], 0)} ms)",
                _ratio(s["rps"], sb["rps"]),
                f"≥ 0.60×: {_ok(s['rps'] >= SUSTAINED_TARGET * sb['rps'])}",
            )
        )
    wake = sc.get("wake", {})
    for kind in _servers(wake):
        r = wake[kind]
        p, base = r["product"], r["baseline"]
        out.append(
            (
                f"(b) wake {r['waiters']} parked: p50 / p99 / max ms",
                kind,
                f"{_f(p['p50_ms'], 2)} / {_f(p['p99_ms'], 2)} / {_f(p['max_ms'], 1)}"
                f", {p['errors']} err",
                f"{_f(base['p50_ms'], 2)} / {_f(base['p99_ms'], 2)} / {_f(base['max_ms'], 1)}",
                f"p99 {_ratio(p['p99_ms'], base['p99_ms'], 1)}",
                f"p99 ≤ 10 ms: {_ok(p['p99_ms'] <= WAKE_TARGET_MS and p['errors'] == 0)}",
            )
        )
        t = r.get("together")
        if t:
            out.append(
                (
                    f"(b) {t['waiters']} decisions at once: waiter after its decision, "
                    "p50 / p99 / max ms",
                    kind,
                    f"{_f(t['p50_ms'], 1)} / {_f(t['p99_ms'], 1)} / {_f(t['max_ms'], 1)}"
                    f", {t['errors']} err",
                    "",
                    "",
                    f"p99 ≤ 100 ms: {_ok(t['p99_ms'] <= 100 and t['errors'] == 0)}",
                )
            )
    held = sc.get("held", {})
    for kind in _servers(held):
        for n, pair in held[kind]["sizes"].items():
            p, base = pair["product"], pair["baseline"]
            label = f"(c) {int(n):,} held"
            out.append(
                (
                    f"{label}: RSS per waiter KiB",
                    kind,
                    _f(p["rss_per_waiter_kib"]),
                    _f(base["rss_per_waiter_kib"]),
                    _ratio(p["rss_per_waiter_kib"], base["rss_per_waiter_kib"]),
                    f"≤ 16 KiB: {_ok(p['rss_per_waiter_kib'] <= KIB_TARGET)}",
                )
            )
            flat = (
                p["held"]["threads"] <= p["idle"]["threads"] + 2
                and p["held"]["db_connections"] <= p["idle"]["db_connections"] + 2
            )
            out.append(
                (
                    f"{label}: threads / DB conns idle→held",
                    kind,
                    f"{p['idle']['threads']}→{p['held']['threads']} / "
                    f"{p['idle']['db_connections']}→{p['held']['db_connections']}",
                    f"{base['idle']['threads']}→{base['held']['threads']} / "
                    f"{base['idle']['db_connections']}→{base['held']['db_connections']}",
                    "",
                    f"flat: {_ok(flat)}",
                )
            )
            out.append(
                (
                    f"{label}: /healthz p99 idle→held ms",
                    kind,
                    f"{_f(p['idle']['healthz']['p99_ms'], 2)}→"
                    f"{_f(p['held']['healthz']['p99_ms'], 2)} ({_f(p['healthz_ratio'], 2)}×)",
                    f"{_f(base['idle']['healthz']['p99_ms'], 2)}→"
                    f"{_f(base['held']['healthz']['p99_ms'], 2)} ({_f(base['healthz_ratio'], 2)}×)",
                    "",
                    f"≤ 2× idle: {_ok(p['healthz_ratio'] <= HEALTHZ_TARGET)}",
                )
            )
            out.append(
                (
                    f"{label}: time to park all s",
                    kind,
                    f"{_f(p['park_s'], 1)} ({_f(p['park_s'] / int(n) * 1e3, 2)} ms each)"
                    + (f", {p['early_returns']} timed out first" if p["early_returns"] else ""),
                    _f(base["park_s"], 2),
                    _ratio(p["park_s"], base["park_s"], 0),
                    "",
                )
            )
    return out


def table(doc: dict) -> str:
    header = ("figure", "server", "AwaitHuman", "baseline", "ratio", "target")
    body = rows(doc)
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]

    def line(r: tuple[str, ...]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def markdown(doc: dict) -> str:
    from .results_md import render

    return render(doc, rows(doc))
