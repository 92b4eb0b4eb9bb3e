"""The operator sockets of the live-queue fan-out bench, held by child processes (a few thousand
sockets need more than one event loop and more file descriptors than the default limit). Each
socket records every frame it receives with ``time.time_ns()``; ``finish`` collects them."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import resource
import time
from typing import Any


def raise_file_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _client_main(
    url: str, headers: list[tuple[str, str]], count: int, ready: Any, stop: Any, out: Any
) -> None:
    from websockets.asyncio.client import connect

    stamps: list[tuple[int, int, bytes | str]] = []
    sockets = []

    async def reader(index: int, ws: Any) -> None:
        with contextlib.suppress(Exception):  # a closed socket ends its reader
            async for message in ws:
                stamps.append((time.time_ns(), index, message))

    tasks = []
    for start in range(0, count, 50):
        batch = await asyncio.gather(
            *(
                connect(
                    url,
                    additional_headers=headers,
                    compression=None,
                    open_timeout=60,
                    ping_interval=None,
                    max_queue=None,
                )
                for _ in range(start, min(count, start + 50))
            )
        )
        for ws in batch:
            tasks.append(asyncio.create_task(reader(len(sockets), ws)))
            sockets.append(ws)
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    out.put([(at, index, message) for at, index, message in stamps])


def client_process(url: str, headers: list[tuple[str, str]], count: int, ready, stop, out) -> None:
    raise_file_limit()
    asyncio.run(_client_main(url, headers, count, ready, stop, out))


class Clients:
    def __init__(self, processes: int, url: str, headers: list[list[tuple[str, str]]], total: int):
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self.out = ctx.Queue()
        self.ready = []
        self.procs = []
        per = total // processes
        for index in range(processes):
            ready = ctx.Event()
            count = per if index < processes - 1 else total - per * (processes - 1)
            proc = ctx.Process(
                target=client_process,
                args=(url, headers[index], count, ready, self.stop, self.out),
                daemon=True,
            )
            proc.start()
            self.ready.append(ready)
            self.procs.append(proc)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        for ready in self.ready:
            if not ready.wait(max(0.1, deadline - time.monotonic())):
                raise RuntimeError("clients did not connect in time")

    def finish(self) -> list[tuple[int, int, Any]]:
        self.stop.set()
        results: list[tuple[int, int, Any]] = []
        for _ in self.procs:
            results += self.out.get(timeout=120)
        for proc in self.procs:
            proc.join(timeout=30)
        return results


class MultiCookieClients(Clients):
    """``Clients`` where each socket signs in as a different operator."""

    def __init__(self, processes: int, url: str, origin: str, cookies: list[str], total: int):
        ctx = mp.get_context("spawn")
        self.stop = ctx.Event()
        self.out = ctx.Queue()
        self.ready = []
        self.procs = []
        per = total // processes
        for index in range(processes):
            ready = ctx.Event()
            mine = cookies[index * per : (index + 1) * per if index < processes - 1 else total]
            proc = ctx.Process(
                target=multi_cookie_process,
                args=(url, origin, mine, ready, self.stop, self.out),
                daemon=True,
            )
            proc.start()
            self.ready.append(ready)
            self.procs.append(proc)


async def _multi_cookie_main(url: str, origin: str, cookies: list[str], ready, stop, out) -> None:
    from websockets.asyncio.client import connect

    stamps: list[tuple[int, int, str]] = []
    sockets = []

    async def reader(index: int, ws: Any) -> None:
        with contextlib.suppress(Exception):  # a closed socket ends its reader
            async for message in ws:
                stamps.append((time.time_ns(), index, message))

    tasks = []
    for start in range(0, len(cookies), 50):
        batch = await asyncio.gather(
            *(
                connect(
                    url,
                    additional_headers=[("Origin", origin), ("Cookie", cookie)],
                    compression=None,
                    open_timeout=60,
                    ping_interval=None,
                    max_queue=None,
                )
                for cookie in cookies[start : start + 50]
            )
        )
        for ws in batch:
            tasks.append(asyncio.create_task(reader(len(sockets), ws)))
            sockets.append(ws)
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    for ws in sockets:
        await ws.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    out.put(stamps)


def multi_cookie_process(url: str, origin: str, cookies: list[str], ready, stop, out) -> None:
    raise_file_limit()
    asyncio.run(_multi_cookie_main(url, origin, cookies, ready, stop, out))
