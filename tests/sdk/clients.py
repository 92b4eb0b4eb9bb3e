"""The client under test, of either flavour: ``AwaitHuman``, or ``AsyncAwaitHuman`` behind
``Blocking`` so that one blocking test body drives it too."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
from awaithuman_sdk import AsyncAwaitHuman, AwaitHuman

if TYPE_CHECKING:
    from tests.sdk.conftest import Live


async def _collect(items: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in items]


class Blocking:
    """An ``AsyncAwaitHuman`` called like ``AwaitHuman``: every call is a coroutine run on the
    client's own event loop in a thread, and the caller blocks for its result. Calls from several
    threads run concurrently on that one loop, as ``asyncio.gather`` would run them."""

    def __init__(self, client: AsyncAwaitHuman) -> None:
        self.client = client
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._run(client.__aenter__())

    def _run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if inspect.isasyncgenfunction(attribute):
            return lambda *args, **kwargs: iter(self._run(_collect(attribute(*args, **kwargs))))
        if inspect.iscoroutinefunction(attribute):
            return lambda *args, **kwargs: self._run(attribute(*args, **kwargs))
        return attribute

    def close(self) -> None:
        self._run(self.client.aclose())

    def __exit__(self, *exc: object) -> None:
        self._run(self.client.__aexit__(*exc))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


@dataclass
class Clients:
    """Makes clients of one flavour, ``sync`` (``AwaitHuman``) or ``async`` (``AsyncAwaitHuman``
    behind ``Blocking``), each entered as a context manager and exited with this one."""

    live: Live
    flavour: str
    made: list[Any] = field(default_factory=list)

    def new(
        self,
        *,
        api_key: str | None = None,
        on_request: Callable[[httpx.Request], None] | None = None,
        on_response: Callable[[httpx.Response], None] | None = None,
        transport: Any = None,
        **kwargs: Any,
    ) -> Any:
        """A client of the agent (or with ``api_key``); ``on_request`` / ``on_response`` see
        every request and response, ``transport`` carries them."""
        hooks = {
            "request": [on_request] if on_request else [],
            "response": [on_response] if on_response else [],
        }
        custom = on_request or on_response or transport
        options = {"api_key": api_key or self.live.agent_key, "base_url": self.live.base}
        client: Any
        if self.flavour == "sync":
            if custom:
                kwargs["http_client"] = httpx.Client(transport=transport, event_hooks=hooks)
            client = AwaitHuman(**options, **kwargs).__enter__()
        else:
            if custom:
                kwargs["http_client"] = httpx.AsyncClient(
                    transport=transport,
                    event_hooks={
                        event: [_awaitable(hook) for hook in hooks[event]] for event in hooks
                    },
                )
            client = Blocking(AsyncAwaitHuman(**options, **kwargs))
        self.made.append(client)
        return client

    def __enter__(self) -> Clients:
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self.made:
            client.__exit__(None, None, None)


def _awaitable(hook: Callable[[Any], None]) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def call(message: Any) -> None:
        hook(message)

    return call
