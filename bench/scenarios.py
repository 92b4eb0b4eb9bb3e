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

ESCALATION = {
    "kind": "approval",
    "title": "Refund order #4512 for $750",
    "action": {"name": "issue_refund", "arguments": {"order": "4512", "amount": 750}},
    "context": {
        "reasoning": "The customer was charged twice; policy allows refunds up to $1,000.",
        "tool_calls": [{"name": "lookup_order", "arguments": {"order": "4512"}, "result": "ok"}],
        "messages": [{"role": "user", "content": "I was charged twice for my order."}],
    },
    "external_id": "run_42",
}
CREATE_PATH = "/api/v1/escalations"
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


# --- helpers ------------------------------------------------------------------------------------


async def create_pending(
    port: int, keys: list[str], count: int, concurrency: int = 32
) -> list[str]:
    """``count`` pending escalations through the API; their ids."""
    conns = await connect_many(port, min(concurrency, count))
    ids: list[str] = []
    queue = list(range(count))

    async def worker(conn: Connection) -> None:
        while queue:
            n = queue.pop()
            data = request("POST", CREATE_PATH, port, key=keys[n % len(keys)], body=ESCALATION)
            reply = await call(conn, data)
            if reply.status != 201:
                raise RuntimeError(f"create failed: {reply.status} {reply.body[:300]!r}")
            ids.append(reply.json()["id"])

    try:
        await asyncio.gather(*(worker(conn) for conn in conns))
    finally:
        client.close_all(conns)
    return ids


def wait_request(port: int, public_id: str, key: str, timeout: float = 60) -> bytes:
    path = f"/api/v1/escalations/{public_id}/wait?timeout={timeout:g}"
    return request("GET", path, port, key=key)


async def park(
    port: int, conns: list[Connection], ids: list[str], keys: list[str]
) -> tuple[list[asyncio.Future], float]:
    """Send one wait per connection, then a ``timeout=0`` sentinel behind them.

    The product's wait consumer opens every wait with one trip through the same database thread,
    first come first served, so the sentinel's reply means the waits sent before it are parked.
    Returns the futures and the seconds from the first send to the sentinel's reply.
    """
    started = time.perf_counter()
    futures = [
        conn.send(wait_request(port, ids[i % len(ids)], keys[i % len(keys)]))
        for i, conn in enumerate(conns)
    ]
    sentinel = await connect(port)
    try:
        reply = await call(sentinel, wait_request(port, ids[0], keys[0], timeout=0), timeout=600)
    except (TimeoutError, client.Closed):
        return futures, math.nan  # never all parked within 10 minutes
    finally:
        sentinel.close()
    return futures, reply.at - started


async def healthz_p99(conn_box: list[Connection], port: int, samples: int) -> dict:
    """Sequential GET /healthz on one connection: p50/p99 in ms."""
    await reopen(conn_box)
    data = request("GET", "/healthz", port)
    latencies = []
    errors = 0
    for _ in range(samples):
        start = time.perf_counter()
        try:
            reply = await call(conn_box[0], data, timeout=30)
        except (client.Closed, TimeoutError):
            errors += 1
            await reopen(conn_box)
            continue
        if reply.status != 200:
            errors += 1
        latencies.append(reply.at - start)
    return {
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "errors": errors,
    }


async def healthz_runs(conn_box: list[Connection], port: int, cfg: Config) -> dict:
    runs = [await healthz_p99(conn_box, port, cfg.healthz_samples) for _ in range(cfg.runs)]
    return {
        "p50_ms": median([r["p50_ms"] for r in runs]),
        "p99_ms": median([r["p99_ms"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "runs_p99_ms": [r["p99_ms"] for r in runs],
    }


def _forget(futures: list[asyncio.Future]) -> None:
    """Retrieve the outcome of every waiter so none is logged as 'never retrieved'."""
    for future in futures:
        if future.done() and not future.cancelled():
            future.exception()
        else:
            future.cancel()


def _keep_waiting(
    port: int, conns: list[Connection], futures: list[asyncio.Future], ids: list[str], keys
) -> list[int]:
    """Re-send waiter i's wait whenever it comes back still pending; ``futures[i]`` is current."""
    count = [0]

    def arm(i: int, future: asyncio.Future) -> None:
        def done(f: asyncio.Future) -> None:
            if f.cancelled() or f.exception() is not None or not conns[i].is_open:
                return
            reply = f.result()
            if reply.status == 200 and reply.json().get("status") == "pending":
                count[0] += 1
                futures[i] = conns[i].send(wait_request(port, ids[i], keys[i % len(keys)]))
                arm(i, futures[i])

        future.add_done_callback(done)

    for i, future in enumerate(futures):
        arm(i, future)
    return count


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
        rewaits = _keep_waiting(port, waiters, futures, ids, keys)
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
        _forget(futures)
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
        _forget(futures)
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
        idle["healthz"] = await healthz_runs(box, port, cfg)

        conns = await connect_many(port, n)
        futures, park_s = await park(port, conns, ids, keys)
        parked_at = time.monotonic()
        await asyncio.sleep(1.0)
        samples = [server.status() | {"db_connections": db_connections()}]
        held_healthz = await healthz_runs(box, port, cfg)
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
        _forget(futures)
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
