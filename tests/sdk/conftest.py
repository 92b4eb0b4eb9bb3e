"""The SDK against a real server: one embedded daphne stack for the session (SQLite, timers in
process), reached over HTTP on 127.0.0.1 like any agent would. No mocks of our API.

``operator`` plays the human: it finds the pending escalation and answers it with a member's
personal key, from another thread, while the SDK is blocked in its long-poll.

``clients`` makes the client under test, once as ``AwaitHuman`` and once as ``AsyncAwaitHuman``
(run on an event loop of its own, behind ``Blocking``), so each test of the client's behaviour
holds for both.
"""

from __future__ import annotations

import asyncio
import faulthandler
import inspect
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from awaithuman_sdk import AsyncAwaitHuman, AwaitHuman

from tests.live import Stack, embedded_stack


class Operator:
    """A human with a personal API key. Retries 429s so it works against tight rate limits."""

    def __init__(self, base: str, key: str) -> None:
        self.http = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=15
        )

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for _ in range(60):
            response = self.http.request(method, path, **kwargs)
            if response.status_code != 429:
                return response
            time.sleep(float(response.headers.get("Retry-After", "1")))
        raise AssertionError(f"{method} {path}: still rate-limited")

    def pending(
        self,
        *,
        external_id: str | None = None,
        run: str | None = None,
        match: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = 20,
    ) -> dict[str, Any]:
        """The newest pending escalation with this ``external_id`` (or ``context.run``, or that
        ``match`` accepts), once it exists. Tests share one server, so each finds its own
        escalation by a fresh id."""
        params = {"status": "pending"}
        if external_id:
            params["external_id"] = external_id
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            results = self.call("GET", "/api/v1/escalations", params=params).json()["results"]
            for escalation in results:
                if run is not None and escalation["context"].get("run") != run:
                    continue
                if match is None or match(escalation):
                    return escalation
            time.sleep(0.2)
        raise AssertionError(f"no pending escalation (external_id={external_id!r}, run={run!r})")

    def answer(self, public_id: str, **body: Any) -> dict[str, Any]:
        response = self.call("POST", f"/api/v1/escalations/{public_id}/responses", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    def approve(self, public_id: str, **body: Any) -> dict[str, Any]:
        return self.answer(public_id, outcome="approve", **body)


class Background:
    """Run ``fn`` in a thread after ``delay`` seconds; ``result()`` joins and re-raises."""

    def __init__(self, fn: Callable[[], Any], delay: float = 0.0) -> None:
        self._value: Any = None
        self._error: BaseException | None = None

        def run() -> None:
            time.sleep(delay)
            try:
                self._value = fn()
            except BaseException as exc:
                self._error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self, timeout: float = 60) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "background task did not finish"
        if self._error is not None:
            raise self._error
        return self._value


@dataclass
class Live:
    stack: Stack
    base: str
    agent_key: str
    operator_key: str
    slug: str

    @property
    def operator(self) -> Operator:
        return Operator(self.base, self.operator_key)

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **self.stack.env,
            "AWAITHUMAN_API_KEY": self.agent_key,
            "AWAITHUMAN_BASE_URL": self.base,
            **extra,
        }


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


def start_live(stack: Stack, **env: str) -> Live:
    stack.env.update(env)
    org = stack.organization()
    base = stack.daphne()
    return Live(stack, base, org["agent_key"], org["operator_key"], org["slug"])


# A test that hangs (a human thread failed, so nobody ever answers) must fail CI, not stall it:
# dump every thread's stack and exit. The slowest test (the 2-minute MCP approval) takes ~3 min.
WATCHDOG_SECONDS = 360


@pytest.fixture(autouse=True)
def _watchdog() -> Iterator[None]:
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    # Many tests share the keys of this one stack: lift the rate limit so they never throttle
    # one another (the 429 storm has its own stack, with a tiny limit).
    with embedded_stack(tmp_path_factory.mktemp("sdk-live")) as stack:
        yield start_live(stack, RATE_LIMIT_DEFAULT="100000")


@pytest.fixture(params=["sync", "async"])
def clients(request: pytest.FixtureRequest, live: Live) -> Iterator[Clients]:
    with Clients(live, request.param) as made:
        yield made


@pytest.fixture
def operator(live: Live) -> Operator:
    return live.operator


@pytest.fixture
def run_id() -> str:
    """A fresh external_id per test, so tests on the shared stack never see each other's work."""
    return f"run-{uuid.uuid4().hex[:12]}"


REFUND = {"name": "issue_refund", "arguments": {"order": 1042, "amount": 750}}
