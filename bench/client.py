"""The load generator: raw HTTP/1.1 over asyncio sockets, parsed with httptools.

httpx costs the generator roughly ten times more CPU per request than this (measured each run,
see ``calibrate`` and RESULTS.md § Load generator), and on one pinned core that cost would be
measured as server latency. Requests are pre-encoded bytes; each response is time-stamped in the
parser callback the moment its last byte arrives, before any coroutine is scheduled.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import httptools

HOST = "127.0.0.1"


class Closed(ConnectionError):
    pass


@dataclass
class Reply:
    status: int
    body: bytes
    at: float  # perf_counter() when the last byte was parsed

    def json(self) -> dict:
        return json.loads(self.body)


class Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.pending: asyncio.Future[Reply] | None = None
        self.chunks: list[bytes] = []
        self.port = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(Closed(f"bad response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(Closed("connection closed by the server"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.chunks = []

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        at = time.perf_counter()
        future, self.pending = self.pending, None
        if future is not None and not future.done():
            future.set_result(Reply(self.parser.get_status_code(), b"".join(self.chunks), at))

    def _fail(self, exc: Exception) -> None:
        future, self.pending = self.pending, None
        if future is not None and not future.done():
            future.set_exception(exc)

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, data: bytes) -> asyncio.Future[Reply]:
        """Write a pre-encoded request now; the future resolves with its reply."""
        if not self.is_open:
            raise Closed("connection is not open")
        future = asyncio.get_running_loop().create_future()
        self.pending = future
        self.transport.write(data)  # type: ignore[union-attr]
        return future

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect(port: int, retries: int = 5) -> Connection:
    loop = asyncio.get_running_loop()
    for attempt in range(retries):
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(Connection, HOST, port), timeout=10
            )
            conn.port = port
            return conn
        except (OSError, TimeoutError):
            if attempt == retries - 1:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


async def connect_many(port: int, count: int, parallel: int = 100) -> list[Connection]:
    """``count`` connections, at most ``parallel`` handshakes at a time (listen backlogs)."""
    conns: list[Connection] = []
    for start in range(0, count, parallel):
        batch = min(parallel, count - start)
        conns += await asyncio.gather(*(connect(port) for _ in range(batch)))
    return conns


async def reopen(conns: list[Connection]) -> int:
    """Reconnect any connection the server closed (idle keep-alive timeouts); how many."""
    closed = [i for i, conn in enumerate(conns) if not conn.is_open]
    if closed:
        fresh = await asyncio.gather(*(connect(conns[i].port) for i in closed))
        for i, conn in zip(closed, fresh, strict=True):
            conns[i] = conn
    return len(closed)


def close_all(conns: Sequence[Connection]) -> None:
    for conn in conns:
        conn.close()


def request(
    method: str,
    path: str,
    port: int,
    *,
    key: str | None = None,
    body: dict | None = None,
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Accept: application/json"]
    payload = b""
    if key:
        lines.append(f"Authorization: Bearer {key}")
    if body is not None:
        payload = json.dumps(body).encode()
        lines.append("Content-Type: application/json")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


async def call(conn: Connection, data: bytes, timeout: float = 30) -> Reply:
    return await asyncio.wait_for(conn.send(data), timeout)


# --- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    clean = sorted(v for v in values if not math.isnan(v))
    if not clean:
        return math.nan
    mid = len(clean) // 2
    return clean[mid] if len(clean) % 2 else (clean[mid - 1] + clean[mid]) / 2


# --- load-generator calibration -----------------------------------------------------------------


async def closed_loop(conns: list[Connection], make: callable, seconds: float) -> dict:
    """Each connection sends back-to-back requests for ``seconds``; throughput and latencies."""
    await reopen(conns)
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}

    async def worker(index: int) -> None:
        nonlocal errors
        n = 0
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                reply = await call(conns[index], make(index, n))
            except (Closed, TimeoutError):
                errors += 1
                await reopen(conns)
                continue
            n += 1
            statuses[reply.status] = statuses.get(reply.status, 0) + 1
            if reply.status >= 400:
                errors += 1
            latencies.append(reply.at - start)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(len(conns))))
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    done = len(latencies)
    return {
        "requests": done,
        "errors": errors,
        "statuses": statuses,
        "rps": done / wall,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "client_cpu_us_per_req": cpu / max(done, 1) * 1e6,
        "client_cpu_share": cpu / wall,
    }


async def httpx_loop(port: int, path: str, concurrency: int, seconds: float) -> dict:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", limits=limits) as client:
        await asyncio.gather(*(client.get(path) for _ in range(concurrency)))  # open the pool
        deadline = time.perf_counter() + seconds
        latencies: list[float] = []

        async def worker() -> None:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                response = await client.get(path)
                response.raise_for_status()
                latencies.append(time.perf_counter() - start)

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    done = len(latencies)
    return {
        "requests": done,
        "rps": done / wall,
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "client_cpu_us_per_req": cpu / max(done, 1) * 1e6,
        "client_cpu_share": cpu / wall,
    }
