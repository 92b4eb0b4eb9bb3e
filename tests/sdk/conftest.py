"""The SDK against a real server: one embedded daphne stack for the session (SQLite, timers in
process), reached over HTTP on 127.0.0.1 like any agent would. No mocks of our API.

``operator`` plays the human: it finds the pending escalation and answers it with a member's
personal key, from another thread, while the SDK is blocked in its long-poll.

``clients`` makes the client under test, once as ``AwaitHuman`` and once as ``AsyncAwaitHuman``
(``tests/sdk/clients.py``), so each test of the client's behaviour holds for both.
"""

from __future__ import annotations

import faulthandler
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live import Stack, embedded_stack
from tests.sdk.clients import Clients


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


def start_live(stack: Stack, **env: str) -> Live:
    stack.env.update(env)
    org = stack.organization()
    base = stack.daphne()
    return Live(stack, base, org["agent_key"], org["operator_key"], org["slug"])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep these tests on one pytest-xdist worker (``--dist loadgroup``): they share one
    session-wide server, which would otherwise start once per worker."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.xdist_group("sdk"))


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
