"""``AwaitHuman`` (blocking) and ``AsyncAwaitHuman`` (asyncio): the agent's side of the API.

Both classes run the same flows (``_flows``: every call written once, without I/O) over
``httpx.Client`` and ``httpx.AsyncClient``; they differ only in how a request is sent and how a
pause is slept.

Waiting loops the long-poll ``GET /escalations/{id}/wait?timeout=S`` (S ≤ 60, the server's
limit) until the escalation is terminal. A failed poll — the server restarting, a proxy
dropping the connection, 5xx, 429 — is retried with backoff for as long as the caller is willing
to wait, so a deploy on either side loses nothing. Creates carry an ``Idempotency-Key`` made once
per logical request, so a retried create never makes a second escalation; after a restart of the
agent itself, passing the same ``external_id`` finds the escalation again instead of asking twice.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import httpx

from . import _flows as flows
from ._core import AnswerSchema
from ._flows import POLL_SECONDS, Flow, Settings, Sleep
from .models import Decision, Escalation

T = TypeVar("T")


class AwaitHuman:
    """Blocking client. ``api_key`` and ``base_url`` default to ``AWAITHUMAN_API_KEY`` and
    ``AWAITHUMAN_BASE_URL``."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        poll_seconds: float = POLL_SECONDS,
        verify_receipts: bool | None = None,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._settings = Settings(
            api_key,
            base_url,
            timeout=timeout,
            max_retries=max_retries,
            poll_seconds=poll_seconds,
            verify_receipts=verify_receipts,
        )
        self._http = http_client or httpx.Client(timeout=timeout, follow_redirects=False)

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AwaitHuman:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, flow: Flow[T]) -> T:
        """Drive ``flow``: send its requests, sleep its pauses, return what it returns."""
        reply: Any = None
        failure: httpx.TransportError | None = None
        while True:
            try:
                step = flow.send(reply) if failure is None else flow.throw(failure)
            except StopIteration as done:
                return done.value
            reply, failure = None, None
            if isinstance(step, Sleep):
                time.sleep(step.seconds)
                continue
            try:
                reply = self._http.request(step.method, step.url, **step.options)
            except httpx.TransportError as exc:
                failure = exc

    def create(self, *, idempotency_key: str | None = None, **fields: Any) -> Escalation:
        """``POST /escalations``. ``fields`` as in the API (``kind``, ``title``, ``action``, …;
        ``timeout`` is accepted for ``timeout_seconds``). Retries reuse one Idempotency-Key."""
        return self._run(flows.create(self._settings, idempotency_key=idempotency_key, **fields))

    def get(self, escalation_id: str) -> Escalation:
        return self._run(flows.get(self._settings, escalation_id))

    def cancel(self, escalation_id: str) -> Escalation:
        """Withdraw the request. Cancelling twice is fine; cancelling a decided one is 409."""
        return self._run(flows.cancel(self._settings, escalation_id))

    def list(
        self,
        *,
        status: str | None = None,
        external_id: str | None = None,
        agent: str | None = None,
        limit: int | None = None,
        **filters: str,
    ) -> Iterator[Escalation]:
        """Newest first, following the cursor across pages. ``filters`` are the history's other
        query parameters, passed as they are: ``q``, ``kind``, ``priority``, ``policy``,
        ``decided_by``, ``channel``, ``created_after``, ``created_before``, ``decided_after``,
        ``decided_before`` (an unknown one is the server's 400)."""
        params: dict[str, Any] | None = flows.list_params(
            status=status, external_id=external_id, agent=agent, limit=limit, **filters
        )
        while params is not None:
            escalations, params = self._run(flows.page(self._settings, params))
            yield from escalations

    def find(self, external_id: str) -> Escalation | None:
        """The newest escalation with this ``external_id``, or None."""
        return self._run(flows.find(self._settings, external_id))

    def wait(self, escalation_id: str, *, timeout: float | None = None) -> Escalation:
        """Block until the escalation is terminal, or ``timeout`` seconds pass (then return it
        as it is). ``timeout=None`` waits as long as it takes, across server restarts."""
        return self._run(flows.wait(self._settings, escalation_id, timeout=timeout))

    def request_approval(
        self,
        action: Any,
        *,
        title: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: int | None = None,
        on_timeout: str | None = None,
        response_schema: dict[str, Any] | None = None,
        priority: str | None = None,
        external_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        callback_url: str | None = None,
        wait_timeout: float | None = None,
        verify_receipt: bool | None = None,
    ) -> Decision:
        """Ask a human to approve ``action`` (``{"name", "arguments"}``) and block until decided.

        Returns the ``Decision`` (run ``decision.action``: it has the human's edits applied);
        raises ``Rejected``, ``TimedOut`` or ``Cancelled`` otherwise. ``timeout`` is the human's
        deadline (seconds, server side), ``wait_timeout`` how long this call blocks. With an
        ``external_id``, a restarted agent picks up its earlier escalation instead of asking
        again. The receipt is verified before returning (see ``verify_receipts``).
        """
        body = flows.approval_body(
            action,
            title,
            context=context,
            timeout=timeout,
            on_timeout=on_timeout,
            response_schema=response_schema,
            priority=priority,
            external_id=external_id,
            metadata=metadata,
            callback_url=callback_url,
        )
        return self._run(
            flows.request_approval(
                self._settings, body, wait_timeout=wait_timeout, verify=verify_receipt
            )
        )

    def ask(
        self,
        question: str,
        *,
        schema: Any = None,
        context: dict[str, Any] | None = None,
        timeout: int | None = None,
        on_timeout: str | None = None,
        priority: str | None = None,
        external_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        wait_timeout: float | None = None,
    ) -> Any:
        """Ask a question and block for the answer. ``schema``: None (returns the text), a JSON
        Schema (returns the answer object) or a Pydantic model class (returns an instance)."""
        answer = AnswerSchema(schema)
        body = flows.question_body(
            question,
            answer,
            context=context,
            timeout=timeout,
            on_timeout=on_timeout,
            priority=priority,
            external_id=external_id,
            metadata=metadata,
        )
        return self._run(flows.ask(self._settings, body, answer, wait_timeout=wait_timeout))

    def verify_receipt(
        self,
        decision: Decision | str | None,
        *,
        action: dict[str, Any] | None = None,
        escalation_id: str | None = None,
    ) -> dict[str, Any]:
        """Verify an approval's receipt against the action about to run (default: the approved
        action of ``decision``); returns the claims, raises ``ReceiptError``."""
        return self._run(
            flows.check_receipt(
                self._settings, decision, action=action, escalation_id=escalation_id
            )
        )


class AsyncAwaitHuman:
    """The asyncio client: the same calls as ``AwaitHuman``, awaited."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 5,
        poll_seconds: float = POLL_SECONDS,
        verify_receipts: bool | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._settings = Settings(
            api_key,
            base_url,
            timeout=timeout,
            max_retries=max_retries,
            poll_seconds=poll_seconds,
            verify_receipts=verify_receipts,
        )
        self._http = http_client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncAwaitHuman:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, flow: Flow[T]) -> T:
        """Drive ``flow`` as ``AwaitHuman._run`` does, awaiting each request and pause."""
        reply: Any = None
        failure: httpx.TransportError | None = None
        while True:
            try:
                step = flow.send(reply) if failure is None else flow.throw(failure)
            except StopIteration as done:
                return done.value
            reply, failure = None, None
            if isinstance(step, Sleep):
                await asyncio.sleep(step.seconds)
                continue
            try:
                reply = await self._http.request(step.method, step.url, **step.options)
            except httpx.TransportError as exc:
                failure = exc

    async def create(self, *, idempotency_key: str | None = None, **fields: Any) -> Escalation:
        return await self._run(
            flows.create(self._settings, idempotency_key=idempotency_key, **fields)
        )

    async def get(self, escalation_id: str) -> Escalation:
        return await self._run(flows.get(self._settings, escalation_id))

    async def cancel(self, escalation_id: str) -> Escalation:
        return await self._run(flows.cancel(self._settings, escalation_id))

    async def list(
        self,
        *,
        status: str | None = None,
        external_id: str | None = None,
        agent: str | None = None,
        limit: int | None = None,
        **filters: str,
    ) -> AsyncIterator[Escalation]:
        params: dict[str, Any] | None = flows.list_params(
            status=status, external_id=external_id, agent=agent, limit=limit, **filters
        )
        while params is not None:
            escalations, params = await self._run(flows.page(self._settings, params))
            for escalation in escalations:
                yield escalation

    async def find(self, external_id: str) -> Escalation | None:
        return await self._run(flows.find(self._settings, external_id))

    async def wait(self, escalation_id: str, *, timeout: float | None = None) -> Escalation:
        return await self._run(flows.wait(self._settings, escalation_id, timeout=timeout))

    async def request_approval(
        self,
        action: Any,
        *,
        title: str | None = None,
        context: dict[str, Any] | None = None,
        timeout: int | None = None,
        on_timeout: str | None = None,
        response_schema: dict[str, Any] | None = None,
        priority: str | None = None,
        external_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        callback_url: str | None = None,
        wait_timeout: float | None = None,
        verify_receipt: bool | None = None,
    ) -> Decision:
        body = flows.approval_body(
            action,
            title,
            context=context,
            timeout=timeout,
            on_timeout=on_timeout,
            response_schema=response_schema,
            priority=priority,
            external_id=external_id,
            metadata=metadata,
            callback_url=callback_url,
        )
        return await self._run(
            flows.request_approval(
                self._settings, body, wait_timeout=wait_timeout, verify=verify_receipt
            )
        )

    async def ask(
        self,
        question: str,
        *,
        schema: Any = None,
        context: dict[str, Any] | None = None,
        timeout: int | None = None,
        on_timeout: str | None = None,
        priority: str | None = None,
        external_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        wait_timeout: float | None = None,
    ) -> Any:
        answer = AnswerSchema(schema)
        body = flows.question_body(
            question,
            answer,
            context=context,
            timeout=timeout,
            on_timeout=on_timeout,
            priority=priority,
            external_id=external_id,
            metadata=metadata,
        )
        return await self._run(flows.ask(self._settings, body, answer, wait_timeout=wait_timeout))

    async def verify_receipt(
        self,
        decision: Decision | str | None,
        *,
        action: dict[str, Any] | None = None,
        escalation_id: str | None = None,
    ) -> dict[str, Any]:
        return await self._run(
            flows.check_receipt(
                self._settings, decision, action=action, escalation_id=escalation_id
            )
        )
