"""The figures of issue #2 § 11: burst, wake, held waiters (and the load-generator calibration).

Each scenario takes a running ``Server`` (or starts its own), warms up, measures three runs and
returns plain dicts; the median of the runs is what RESULTS.md reports.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from . import client
from .client import Connection, call, connect, connect_many, median, percentile, reopen, request
from .server import REDIS_URL, Server, db_connections, sample_backends
from .waiters import (
    CREATE_PATH,
    ESCALATION,
    create_pending,
    forget,
    healthz_p99,
    healthz_runs,
    keep_waiting,
    park,
    wait_request,
)

BASELINE_PATH = "/bench/insert"


@dataclass
class Config:
    runs: int = 3
    burst_agents: int = 200
    burst_rounds: int = 20
    burst_warmup_rounds: int = 3
    sustained_concurrency: int = 32
    sustained_seconds: float = 10.0
    sustained_warmup_seconds: float = 2.0
    wake_waiters: int = 1000
    wake_warmup_waiters: int = 100
    wake_together: int = 200
    held_sizes: tuple[int, ...] = (1000, 5000, 10000)
    held_seconds: float = 20.0
    held_pool: int = 1000
    healthz_samples: int = 200

    @classmethod
    def quick(cls) -> Config:
        return cls(
            burst_rounds=5,
            burst_warmup_rounds=1,
            sustained_seconds=3.0,
            sustained_warmup_seconds=1.0,
            wake_waiters=200,
            wake_warmup_waiters=20,
            held_sizes=(1000,),
            held_seconds=8.0,
            held_pool=200,
            healthz_samples=100,
        )


# --- (a) burst ----------------------------------------------------------------------------------


async def burst_rounds(
    conns: list[Connection], requests: list[bytes], rounds: int, pool: list[str] | None = None
) -> list[dict]:
    """Fire one request per connection at once, ``rounds`` times; created ids go to ``pool``."""
    out = []
    for _ in range(rounds):
        await reopen(conns)
        await asyncio.sleep(0.2)  # let the previous round's after-commit work settle
        started = time.perf_counter()
        futures = [conn.send(data) for conn, data in zip(conns, requests, strict=True)]
        results = await asyncio.gather(
            *(asyncio.wait_for(f, 60) for f in futures), return_exceptions=True
        )
        replies = [r for r in results if isinstance(r, client.Reply)]
        errors = len(results) - len(replies) + sum(1 for r in replies if r.status != 201)
        last = max((r.at for r in replies), default=time.perf_counter())
        if pool is not None:
            pool.extend(r.json()["id"] for r in replies if r.status == 201)
        out.append({"ms": (last - started) * 1e3, "errors": errors})
    return out


def _round_stats(rounds: list[dict]) -> dict:
    times = [r["ms"] for r in rounds]
    return {
        "p50_ms": percentile(times, 50),
        "p99_ms": percentile(times, 99),
        "max_ms": max(times),
        "errors": sum(r["errors"] for r in rounds),
        "rounds": len(rounds),
    }


async def sustained(conns: list[Connection], requests: list[bytes], seconds: float) -> dict:
    count = len(requests)
    return await client.closed_loop(conns, lambda i, n: requests[(i * 7 + n) % count], seconds)


async def take_pending(port: int, keys: list[str], pool: list[str], count: int) -> list[str]:
    """``count`` pending escalations: from ``pool`` (burst leftovers), else created now."""
    taken = [pool.pop() for _ in range(min(count, len(pool)))]
    if len(taken) < count:
        taken += await create_pending(port, keys, count - len(taken))
    return taken


async def run_burst(server: Server, keys: list[str], cfg: Config, pool: list[str], log) -> dict:
    port = server.port
    agents = keys[: cfg.burst_agents]
    product = [request("POST", CREATE_PATH, port, key=key, body=ESCALATION) for key in agents]
    baseline = [request("POST", BASELINE_PATH, port, body=ESCALATION) for _ in agents]
    conns = await connect_many(port, len(agents))
    try:
        await burst_rounds(conns, product, cfg.burst_warmup_rounds, pool)
        await burst_rounds(conns, baseline, cfg.burst_warmup_rounds)
        runs: dict[str, list[dict]] = {"product": [], "baseline": []}
        for run in range(cfg.runs):
            for name, reqs in (("product", product), ("baseline", baseline)):
                created = pool if name == "product" else None
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample_backends(stop, every=0.05))
                stats = _round_stats(await burst_rounds(conns, reqs, cfg.burst_rounds, created))
                stop.set()
                stats |= await sampler
                runs[name].append(stats)
                log(
                    f"  burst {server.kind} run {run + 1} {name}: p50 {stats['p50_ms']:.0f} ms, "
                    f"p99 {stats['p99_ms']:.0f} ms, errors {stats['errors']}"
                )
    finally:
        client.close_all(conns)

    conns = await connect_many(port, cfg.sustained_concurrency)
    try:
        await sustained(conns, product, cfg.sustained_warmup_seconds)
        await sustained(conns, baseline, cfg.sustained_warmup_seconds)
        sruns: dict[str, list[dict]] = {"product": [], "baseline": []}
        for run in range(cfg.runs):
            for name, reqs in (("product", product), ("baseline", baseline)):
                cpu0, wall0 = server.cpu_seconds(), time.perf_counter()
                stop = asyncio.Event()
                sampler = asyncio.create_task(sample_backends(stop))
                stats = await sustained(conns, reqs, cfg.sustained_seconds)
                stats["server_cpu_share"] = (server.cpu_seconds() - cpu0) / (
                    time.perf_counter() - wall0
                )
                stop.set()
                stats |= await sampler
                sruns[name].append(stats)
                log(
                    f"  sustained {server.kind} run {run + 1} {name}: {stats['rps']:.0f} req/s, "
                    f"p99 {stats['p99_ms']:.0f} ms, errors {stats['errors']}, "
                    f"server CPU {stats['server_cpu_share']:.0%}, DB backends active "
                    f"{stats['db_active_mean']:.1f} / waiting on a lock "
                    f"{stats['db_lock_waiting_mean']:.1f}"
                )
    finally:
        client.close_all(conns)

    def summary(items: list[dict], keys_: tuple[str, ...]) -> dict:
        return {k: median([i.get(k, math.nan) for i in items]) for k in keys_} | {
            "errors": sum(i["errors"] for i in items),
            "runs": items,
        }

    burst_keys = ("p50_ms", "p99_ms", "max_ms", "db_active_mean", "db_lock_waiting_mean")
    sus_keys = ("rps", "p50_ms", "p99_ms", "server_cpu_share", "client_cpu_share")
    sus_keys += ("db_active_mean", "db_lock_waiting_mean")
    return {
        "agents": len(agents),
        "rounds": cfg.burst_rounds,
        "burst": {
            "product": summary(runs["product"], burst_keys),
            "baseline": summary(runs["baseline"], burst_keys),
        },
        "sustained": {
            "concurrency": cfg.sustained_concurrency,
            "seconds": cfg.sustained_seconds,
            "product": summary(sruns["product"], sus_keys),
            "baseline": summary(sruns["baseline"], sus_keys),
        },
    }


# --- (b) wake -----------------------------------------------------------------------------------


async def wake_once(
    server: Server, keys: list[str], operator_key: str, n: int, pool: list[str]
) -> dict:
    port = server.port
    ids = await take_pending(port, keys, pool, n)
    waiters = await connect_many(port, n)
    decider = await connect(port)
    futures: list[asyncio.Future] = []
    try:
        futures, park_s = await park(port, waiters, ids, keys)
        await asyncio.sleep(0.5)
        early = sum(1 for f in futures if f.done())
        # Like the SDK, a waiter whose 60-s wait ran out while still pending waits again: a run of
        # 1,000 one-at-a-time decisions can outlast one wait.
        rewaits = keep_waiting(port, waiters, futures, ids, keys)
        after_response, after_send = [], []
        errors = 0
        for i, public_id in enumerate(ids):
            body = {"outcome": "approve", "comment": "ok"}
            data = request(
                "POST",
                f"/api/v1/escalations/{public_id}/responses",
                port,
                key=operator_key,
                body=body,
            )
            sent = time.perf_counter()
            decision = await call(decider, data)
            try:
                woken = await asyncio.wait_for(futures[i], 10)
                if woken.status == 200 and woken.json().get("status") == "pending":
                    woken = await asyncio.wait_for(futures[i], 10)  # timed out just before
            except (TimeoutError, client.Closed):
                errors += 1
                continue
            if decision.status != 201 or woken.status != 200:
                errors += 1
                continue
            if woken.json().get("status") != "approved":
                errors += 1
                continue
            after_response.append(woken.at - decision.at)
            after_send.append(woken.at - sent)
    finally:
        client.close_all(waiters)
        decider.close()
        forget(futures)
    ms = [x * 1e3 for x in after_response]
    return {
        "waiters": n,
        "park_s": park_s,
        "early_returns": early,
        "rewaits": rewaits[0],
        "errors": errors,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "min_ms": min(ms) if ms else float("nan"),
        "decision_to_wake_p50_ms": percentile([x * 1e3 for x in after_send], 50),
        "decision_to_wake_p99_ms": percentile([x * 1e3 for x in after_send], 99),
    }


async def wake_together(
    server: Server, keys: list[str], operator_key: str, n: int, pool: list[str]
) -> dict:
    """Issue #11's case: ``n`` agents parked, then ``n`` decisions sent at the same instant on
    ``n`` connections. Each waiter's return is timed against its own decision's response."""
    port = server.port
    ids = await take_pending(port, keys, pool, n)
    waiters = await connect_many(port, n)
    deciders = await connect_many(port, n)
    futures: list[asyncio.Future] = []
    try:
        futures, park_s = await park(port, waiters, ids, keys)
        await asyncio.sleep(0.5)
        decisions = [
            request(
                "POST",
                f"/api/v1/escalations/{public_id}/responses",
                port,
                key=operator_key,
                body={"outcome": "approve", "comment": "ok"},
            )
            for public_id in ids
        ]
        replies = await asyncio.gather(
            *(call(conn, data) for conn, data in zip(deciders, decisions, strict=True)),
            return_exceptions=True,
        )
        after, errors = [], 0
        for i, decision in enumerate(replies):
            try:
                woken = await asyncio.wait_for(futures[i], 20)
            except (TimeoutError, client.Closed):
                errors += 1
                continue
            if isinstance(decision, BaseException) or decision.status != 201:
                errors += 1
                continue
            if woken.status != 200 or woken.json().get("status") != "approved":
                errors += 1
                continue
            after.append((woken.at - decision.at) * 1e3)
    finally:
        client.close_all(waiters)
        client.close_all(deciders)
        forget(futures)
    return {
        "waiters": n,
        "park_s": park_s,
        "errors": errors,
        "p50_ms": percentile(after, 50),
        "p99_ms": percentile(after, 99),
        "max_ms": max(after) if after else float("nan"),
    }


async def redis_round_trip(n: int, warmup: int = 100) -> dict:
    """Baseline: PUBLISH from one redis.asyncio client to a subscriber on another, one at a time."""
    sub_client = aioredis.Redis.from_url(REDIS_URL)
    pub_client = aioredis.Redis.from_url(REDIS_URL)
    channel = "bench:wake-baseline"
    latencies = []
    try:
        async with sub_client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.subscribe(channel)
            await pubsub.get_message(timeout=1)  # the subscribe confirmation
            for i in range(warmup + n):
                started = time.perf_counter()
                await pub_client.publish(channel, str(i))
                while True:
                    message = await pubsub.get_message(timeout=5)
                    if message is not None and message["type"] == "message":
                        break
                if i >= warmup:
                    latencies.append((time.perf_counter() - started) * 1e3)
    finally:
        await sub_client.aclose()
        await pub_client.aclose()
    return {
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
    }


async def run_wake(
    server: Server, keys: list[str], operator_key: str, cfg: Config, pool: list[str], log
) -> dict:
    await wake_once(server, keys, operator_key, cfg.wake_warmup_waiters, pool)
    runs, baselines = [], []
    for run in range(cfg.runs):
        result = await wake_once(server, keys, operator_key, cfg.wake_waiters, pool)
        baseline = await redis_round_trip(cfg.wake_waiters)
        runs.append(result)
        baselines.append(baseline)
        log(
            f"  wake {server.kind} run {run + 1}: p50 {result['p50_ms']:.2f} ms, p99 "
            f"{result['p99_ms']:.2f} ms, max {result['max_ms']:.2f} ms, errors {result['errors']}, "
            f"parked {result['waiters']} in {result['park_s']:.2f} s; redis p99 "
            f"{baseline['p99_ms']:.2f} ms"
        )
    together = []
    for run in range(cfg.runs):
        result = await wake_together(server, keys, operator_key, cfg.wake_together, pool)
        together.append(result)
        log(
            f"  wake {server.kind} {cfg.wake_together} decisions at once, run {run + 1}: p50 "
            f"{result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, errors {result['errors']}"
        )
    keys_ = ("p50_ms", "p99_ms", "max_ms", "park_s", "decision_to_wake_p50_ms")
    keys_ += ("decision_to_wake_p99_ms",)
    return {
        "together": {k: median([r[k] for r in together]) for k in ("p50_ms", "p99_ms", "max_ms")}
        | {
            "waiters": cfg.wake_together,
            "errors": sum(r["errors"] for r in together),
            "runs": together,
        },
        "waiters": cfg.wake_waiters,
        "product": {k: median([r[k] for r in runs]) for k in keys_}
        | {
            "errors": sum(r["errors"] for r in runs),
            "early_returns": sum(r["early_returns"] for r in runs),
            "rewaits": sum(r.get("rewaits", 0) for r in runs),
            "runs": runs,
        },
        "baseline": {k: median([b[k] for b in baselines]) for k in ("p50_ms", "p99_ms", "max_ms")}
        | {"runs": baselines},
    }


# --- (c) held waiters ---------------------------------------------------------------------------


async def held_one(
    kind: str,
    app: str,
    n: int,
    keys: list[str],
    ids: list[str],
    cfg: Config,
    log,
    env: dict[str, str] | None = None,
) -> dict:
    server = Server(kind, app, env)
    await server.start()
    port = server.port
    conns: list[Connection] = []
    futures: list[asyncio.Future] = []
    box = [await connect(port)]
    try:
        # Warm-up: code paths imported, the wait dispatcher's subscription up, pool filled.
        await healthz_p99(box, port, 100)
        warm = await connect_many(port, 10)
        await asyncio.gather(
            *(call(c, wait_request(port, ids[i], keys[i], timeout=0.2)) for i, c in enumerate(warm))
        )
        client.close_all(warm)
        await asyncio.sleep(0.5)
        idle = server.status() | {"db_connections": db_connections()}
        idle["healthz"] = await healthz_runs(box, port, cfg.healthz_samples, cfg.runs)

        conns = await connect_many(port, n)
        futures, park_s = await park(port, conns, ids, keys)
        parked_at = time.monotonic()
        await asyncio.sleep(1.0)
        samples = [server.status() | {"db_connections": db_connections()}]
        held_healthz = await healthz_runs(box, port, cfg.healthz_samples, cfg.runs)
        while time.monotonic() - parked_at < cfg.held_seconds:
            await asyncio.sleep(1.0)
            samples.append(server.status() | {"db_connections": db_connections()})
        early = sum(1 for f in futures if f.done())
        held = {
            "rss_kib": max(s["rss_kib"] for s in samples),
            "threads": max(s["threads"] for s in samples),
            "db_connections": max(s["db_connections"] for s in samples),
            "healthz": held_healthz,
        }
    finally:
        box[0].close()
        client.close_all(conns)
        server.stop()
        forget(futures)
    per_waiter = (held["rss_kib"] - idle["rss_kib"]) / n
    result = {
        "waiters": n,
        "park_s": park_s,
        "early_returns": early,
        "idle": idle,
        "held": held,
        "rss_per_waiter_kib": per_waiter,
        "healthz_ratio": held["healthz"]["p99_ms"] / idle["healthz"]["p99_ms"],
    }
    log(
        f"  held {kind} {app.split(':')[0]} n={n}: {per_waiter:.1f} KiB/waiter, threads "
        f"{idle['threads']}→{held['threads']}, db {idle['db_connections']}→"
        f"{held['db_connections']}, healthz p99 {idle['healthz']['p99_ms']:.2f}→"
        f"{held['healthz']['p99_ms']:.2f} ms, parked in {park_s:.1f} s, early {early}"
    )
    return result


async def run_held(kind: str, keys: list[str], ids: list[str], cfg: Config, log) -> dict:
    out: dict[str, dict] = {}
    for n in cfg.held_sizes:
        try:
            product = await held_one(kind, "bench.baseline_app:application", n, keys, ids, cfg, log)
            baseline = await held_one(kind, "bench.raw_wait:application", n, keys, ids, cfg, log)
        except (OSError, RuntimeError, TimeoutError) as exc:  # report the sizes that worked
            log(f"  held {kind} n={n} failed: {exc!r}")
            continue
        out[str(n)] = {"product": product, "baseline": baseline}
    return out


# --- load generator calibration -----------------------------------------------------------------


async def calibrate(kind: str, seconds: float, log) -> dict:
    """Raw-socket client vs httpx against the raw ASGI app's /healthz (the cheapest endpoint)."""
    server = Server(kind, "bench.raw_wait:application")
    await server.start()
    try:
        port = server.port
        conns = await connect_many(port, 32)
        data = request("GET", "/healthz", port)
        await client.closed_loop(conns, lambda i, n: data, 1.0)
        raw = await client.closed_loop(conns, lambda i, n: data, seconds)
        client.close_all(conns)
        await client.httpx_loop(port, "/healthz", 32, 1.0)
        hx = await client.httpx_loop(port, "/healthz", 32, seconds)
        hx1 = await client.httpx_loop(port, "/healthz", 1, seconds)
    finally:
        server.stop()
    log(
        f"  load generator vs {kind} raw ASGI /healthz: raw sockets {raw['rps']:.0f} req/s "
        f"({raw['client_cpu_us_per_req']:.0f} µs client CPU/req), httpx {hx['rps']:.0f} req/s "
        f"({hx['client_cpu_us_per_req']:.0f} µs/req; one at a time {hx1['rps']:.0f} req/s, "
        f"{hx1['client_cpu_us_per_req']:.0f} µs/req)"
    )
    return {"server": kind, "raw": raw, "httpx": hx, "httpx_sequential": hx1}
