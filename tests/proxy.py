"""A TCP proxy on 127.0.0.1 that a test stops and restarts, to take a service away from real
processes (and give it back) without touching the service itself.

``stop()`` closes the listening socket and aborts every open connection, as a crashed database
host or a dropped network path would look to the client; ``start()`` listens on the same port
again. ``lose_reply(marker, nth=…)`` forwards the ``nth`` client message containing ``marker``
(counted from then on, over every connection), waits for the server's answer to it, and instead
of passing that answer on drops the connection: the server did the work, the client never hears.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.live import free_port


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._marker: bytes | None = None
        self._countdown = 0
        self.lost = threading.Event()

    def lose_reply(self, marker: bytes, *, nth: int = 1) -> None:
        self._loop.call_soon_threadsafe(self._arm, marker, nth)

    def _run(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)  # type: ignore[arg-type]

    def start(self) -> None:
        self._run(self._start())

    def stop(self) -> None:
        self._run(self._stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        pair = {writer, upstream_writer}
        self._writers |= pair
        doomed = asyncio.Event()  # this connection's next answer is to be lost
        await asyncio.gather(
            self._pipe(reader, upstream_writer, watch=doomed),
            self._pipe(upstream_reader, writer, drop_when=doomed, pair=pair),
        )
        self._writers -= pair

    def _arm(self, marker: bytes, nth: int) -> None:
        self._marker, self._countdown = marker, nth
        self.lost.clear()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        watch: asyncio.Event | None = None,
        drop_when: asyncio.Event | None = None,
        pair: set[asyncio.StreamWriter] | None = None,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if drop_when is not None and drop_when.is_set():
                    for end in pair or ():
                        end.transport.abort()
                    self.lost.set()
                    return
                if watch is not None and self._marker is not None and self._marker in data:
                    self._countdown -= 1
                    if self._countdown == 0:
                        self._marker = None
                        watch.set()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


@contextmanager
def tcp_proxy(target_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
