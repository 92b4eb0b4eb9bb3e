"""What the scenarios put on a server: pending escalations created through the API, long-poll
waits parked one per raw-socket connection (and re-sent while still pending), and the latency of
``/healthz`` meanwhile."""

from __future__ import annotations

import asyncio
import math
import time

from . import client
from .client import Connection, call, connect, connect_many, median, percentile, reopen, request

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


async def healthz_runs(conn_box: list[Connection], port: int, samples: int, repeats: int) -> dict:
    """``healthz_p99`` ``repeats`` times: the medians."""
    runs = [await healthz_p99(conn_box, port, samples) for _ in range(repeats)]
    return {
        "p50_ms": median([r["p50_ms"] for r in runs]),
        "p99_ms": median([r["p99_ms"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "runs_p99_ms": [r["p99_ms"] for r in runs],
    }


def forget(futures: list[asyncio.Future]) -> None:
    """Retrieve the outcome of every waiter so none is logged as 'never retrieved'."""
    for future in futures:
        if future.done() and not future.cancelled():
            future.exception()
        else:
            future.cancel()


def keep_waiting(
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
