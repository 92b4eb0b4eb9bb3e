"""``AwaitHuman`` (blocking) and ``AsyncAwaitHuman`` (asyncio): the agent's side of the API.

The two classes are the same calls over ``httpx.Client`` and ``httpx.AsyncClient``; what they
share (bodies, error mapping, retry timing, decision → exception) is in ``_core``.

Waiting loops the long-poll ``GET /escalations/{id}/wait?timeout=S`` (S ≤ 60, the server's
limit) until the escalation is terminal. A failed poll — the server restarting, a proxy
dropping the connection, 5xx, 429 — is retried with backoff for as long as the caller is willing
to wait, so a deploy on either side loses nothing. Creates carry an ``Idempotency-Key`` made once
per logical request, so a retried create never makes a second escalation; after a restart of the
agent itself, passing the same ``external_id`` finds the escalation again instead of asking twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from ._core import (
    DEFAULT_BASE_URL,
    USER_AGENT,
    AnswerSchema,
    backoff,
    create_body,
    default_title,
    normalize_action,
    outcome,
    question_fields,
    raise_for_problem,
    retry_delay,
    same_request,
    should_retry,
)
from .errors import (
    AwaitHumanError,
    Conflict,
    ConnectionFailed,
    MissingDependency,
    RateLimited,
    ServerError,
)
from .models import Decision, Escalation
from .receipts import JWKS_PATH, JWKSCache, cryptography_available, receipt_kid, verify_receipt

logger = logging.getLogger("awaithuman_sdk")

# Seconds one long-poll asks the server to hold (its limit is 60). Below 60 so that proxies with
# a 60 s idle timeout in between never cut a poll short.
POLL_SECONDS = 50.0
# How long the wait loop sleeps at most between attempts while the server is unreachable.
WAIT_RETRY_CAP = 10.0
# Failures of the long-poll that mean "try again", not "give up".
_TRANSIENT = (ConnectionFailed, ServerError, RateLimited)


class _Settings:
    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        *,
        timeout: float,
        max_retries: int,
        poll_seconds: float,
        verify_receipts: bool | None,
    ) -> None:
        api_key = api_key or os.environ.get("AWAITHUMAN_API_KEY")
        if not api_key:
            raise AwaitHumanError("No API key: pass api_key=… or set AWAITHUMAN_API_KEY.")
        self.api_key = api_key
        self.base_url = (
            base_url or os.environ.get("AWAITHUMAN_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.poll_seconds = min(max(poll_seconds, 0.0), 60.0)
        if verify_receipts and not cryptography_available():
            raise MissingDependency(
                "verify_receipts=True needs 'cryptography': pip install 'awaithuman-sdk[receipts]'"
            )
        # None: verify when the [receipts] extra is installed.
        self.verify_receipts = (
            cryptography_available() if verify_receipts is None else verify_receipts
        )
        if verify_receipts is None and not self.verify_receipts:
            logger.warning(
                "awaithuman-sdk: 'cryptography' is not installed, so approvals are not checked "
                "against their receipts; pip install 'awaithuman-sdk[receipts]'"
            )
        self.jwks = JWKSCache()

    def headers(self, *, auth: bool) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def poll_for(self, deadline: float | None) -> float:
        if deadline is None:
            return self.poll_seconds
        return max(0.0, min(self.poll_seconds, deadline - time.monotonic()))

    def wait_delay(self, error: AwaitHumanError, attempt: int, deadline: float | None) -> float:
        """How long to sleep after a failed poll; re-raise if that would pass the deadline."""
        delay = getattr(error, "retry_after", None) or backoff(attempt, cap=WAIT_RETRY_CAP)
        if deadline is not None and time.monotonic() + delay > deadline:
            raise error
        logger.info("awaithuman-sdk: wait interrupted (%s); retrying in %.1f s", error, delay)
        return delay

    def should_verify(self, override: bool | None) -> bool:
        return self.verify_receipts if override is None else override


def _cursor(next_url: str | None) -> str | None:
    if not next_url:
        return None
    return (parse_qs(urlsplit(next_url).query).get("cursor") or [None])[0]


def _approval_body(action: Any, title: str | None, **fields: Any) -> dict[str, Any]:
    action = normalize_action(action)
    return create_body(
        kind="approval", title=title or default_title(action), action=action, **fields
    )


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
        self._settings = _Settings(
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

    # --- HTTP with retries -----------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,
        retries: int | None = None,
        auth: bool = True,
    ) -> Any:
        settings = self._settings
        retries = settings.max_retries if retries is None else retries
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    method,
                    settings.base_url + path,
                    json=json,
                    params=params,
                    headers={**settings.headers(auth=auth), **(headers or {})},
                    timeout=timeout if timeout is not None else settings.timeout,
                )
            except httpx.TransportError as exc:
                if attempt >= retries:
                    raise ConnectionFailed(f"{method} {path}: {exc!r}") from exc
                delay = backoff(attempt)
            else:
                if attempt >= retries or not should_retry(response, idempotent=True):
                    raise_for_problem(response)
                    return response.json()
                delay = retry_delay(attempt, response)
            time.sleep(delay)
            attempt += 1

    # --- The API ----------------------------------------------------------------------------

    def create(self, *, idempotency_key: str | None = None, **fields: Any) -> Escalation:
        """``POST /escalations``. ``fields`` as in the API (``kind``, ``title``, ``action``, …;
        ``timeout`` is accepted for ``timeout_seconds``). Retries reuse one Idempotency-Key."""
        key = idempotency_key or f"sdk-{uuid.uuid4().hex}"
        data = self._send(
            "POST",
            "/api/v1/escalations",
            json=create_body(**fields),
            headers={"Idempotency-Key": key},
        )
        return Escalation.from_api(data)

    def get(self, escalation_id: str) -> Escalation:
        return Escalation.from_api(self._send("GET", f"/api/v1/escalations/{escalation_id}"))

    def cancel(self, escalation_id: str) -> Escalation:
        """Withdraw the request. Cancelling twice is fine; cancelling a decided one is 409."""
        try:
            data = self._send("POST", f"/api/v1/escalations/{escalation_id}/cancel")
        except Conflict as exc:
            if exc.problem.get("escalation_status") != "cancelled":
                raise
            return self.get(escalation_id)
        return Escalation.from_api(data)

    def list(
        self,
        *,
        status: str | None = None,
        external_id: str | None = None,
        agent: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Escalation]:
        """Newest first, following the cursor across pages."""
        params: dict[str, Any] = {
            key: value
            for key, value in (
                ("status", status),
                ("external_id", external_id),
                ("agent", agent),
                ("limit", limit),
            )
            if value is not None
        }
        while True:
            page = self._send("GET", "/api/v1/escalations", params=params)
            for item in page.get("results", []):
                yield Escalation.from_api(item)
            cursor = _cursor(page.get("next"))
            if cursor is None:
                return
            params["cursor"] = cursor

    def find(self, external_id: str) -> Escalation | None:
        """The newest escalation with this ``external_id``, or None."""
        page = self._send(
            "GET", "/api/v1/escalations", params={"external_id": external_id, "limit": 1}
        )
        results = page.get("results", [])
        return Escalation.from_api(results[0]) if results else None

    def wait(self, escalation_id: str, *, timeout: float | None = None) -> Escalation:
        """Block until the escalation is terminal, or ``timeout`` seconds pass (then return it
        as it is). ``timeout=None`` waits as long as it takes, across server restarts."""
        settings = self._settings
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            poll = settings.poll_for(deadline)
            try:
                data = self._send(
                    "GET",
                    f"/api/v1/escalations/{escalation_id}/wait",
                    params={"timeout": f"{poll:.3f}"},
                    timeout=httpx.Timeout(poll + 15, connect=10),
                    retries=0,
                )
            except _TRANSIENT as exc:
                time.sleep(settings.wait_delay(exc, attempt, deadline))
                attempt += 1
                continue
            attempt = 0
            escalation = Escalation.from_api(data)
            if escalation.is_terminal or (deadline is not None and time.monotonic() >= deadline):
                return escalation

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
        body = _approval_body(
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
        escalation = self._resume_or_create(body)
        if not escalation.is_terminal:
            escalation = self.wait(escalation.id, timeout=wait_timeout)
        decision = outcome(escalation)
        if self._settings.should_verify(verify_receipt):
            self.verify_receipt(decision)
        return decision

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
        title, context = question_fields(question, context)
        body = create_body(
            kind="question",
            title=title,
            context=context,
            response_schema=answer.json_schema,
            timeout=timeout,
            on_timeout=on_timeout,
            priority=priority,
            external_id=external_id,
            metadata=metadata,
        )
        escalation = self._resume_or_create(body)
        if not escalation.is_terminal:
            escalation = self.wait(escalation.id, timeout=wait_timeout)
        return answer.parse(outcome(escalation).response)

    def verify_receipt(
        self,
        decision: Decision | str | None,
        *,
        action: dict[str, Any] | None = None,
        escalation_id: str | None = None,
    ) -> dict[str, Any]:
        """Verify an approval's receipt against the action about to run (default: the approved
        action of ``decision``); returns the claims, raises ``ReceiptError``."""
        receipt, action, escalation_id = _receipt_inputs(decision, action, escalation_id)
        jwks = self._settings.jwks.get(
            receipt_kid(receipt) if receipt else "",
            lambda: self._send("GET", JWKS_PATH, auth=False),
        )
        return verify_receipt(receipt, action=action, jwks=jwks, escalation_id=escalation_id)

    def _resume_or_create(self, body: dict[str, Any]) -> Escalation:
        external_id = body.get("external_id")
        earlier = self.find(external_id) if external_id else None
        if earlier is not None and _resumable(earlier, body):
            return earlier
        return self.create(**body)


def _resumable(earlier: Escalation, body: dict[str, Any]) -> bool:
    """Resume the newest escalation with this ``external_id`` when it is the same request
    (same kind and action, or same question) and was not withdrawn."""
    if not same_request(earlier, kind=body["kind"], action=body.get("action"), title=body["title"]):
        return False
    logger.info("awaithuman-sdk: resuming %s (external_id %s)", earlier.id, body["external_id"])
    return True


def _receipt_inputs(
    decision: Decision | str | None, action: dict[str, Any] | None, escalation_id: str | None
) -> tuple[str | None, dict[str, Any] | None, str | None]:
    if isinstance(decision, Decision):
        return (
            decision.receipt,
            action if action is not None else decision.action,
            escalation_id or decision.escalation_id,
        )
    return decision, action, escalation_id


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
        self._settings = _Settings(
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

    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,
        retries: int | None = None,
        auth: bool = True,
    ) -> Any:
        settings = self._settings
        retries = settings.max_retries if retries is None else retries
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    method,
                    settings.base_url + path,
                    json=json,
                    params=params,
                    headers={**settings.headers(auth=auth), **(headers or {})},
                    timeout=timeout if timeout is not None else settings.timeout,
                )
            except httpx.TransportError as exc:
                if attempt >= retries:
                    raise ConnectionFailed(f"{method} {path}: {exc!r}") from exc
                delay = backoff(attempt)
            else:
                if attempt >= retries or not should_retry(response, idempotent=True):
                    raise_for_problem(response)
                    return response.json()
                delay = retry_delay(attempt, response)
            await asyncio.sleep(delay)
            attempt += 1

    async def create(self, *, idempotency_key: str | None = None, **fields: Any) -> Escalation:
        key = idempotency_key or f"sdk-{uuid.uuid4().hex}"
        data = await self._send(
            "POST",
            "/api/v1/escalations",
            json=create_body(**fields),
            headers={"Idempotency-Key": key},
        )
        return Escalation.from_api(data)

    async def get(self, escalation_id: str) -> Escalation:
        return Escalation.from_api(await self._send("GET", f"/api/v1/escalations/{escalation_id}"))

    async def cancel(self, escalation_id: str) -> Escalation:
        try:
            data = await self._send("POST", f"/api/v1/escalations/{escalation_id}/cancel")
        except Conflict as exc:
            if exc.problem.get("escalation_status") != "cancelled":
                raise
            return await self.get(escalation_id)
        return Escalation.from_api(data)

    async def list(
        self,
        *,
        status: str | None = None,
        external_id: str | None = None,
        agent: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Escalation]:
        params: dict[str, Any] = {
            key: value
            for key, value in (
                ("status", status),
                ("external_id", external_id),
                ("agent", agent),
                ("limit", limit),
            )
            if value is not None
        }
        while True:
            page = await self._send("GET", "/api/v1/escalations", params=params)
            for item in page.get("results", []):
                yield Escalation.from_api(item)
            cursor = _cursor(page.get("next"))
            if cursor is None:
                return
            params["cursor"] = cursor

    async def find(self, external_id: str) -> Escalation | None:
        page = await self._send(
            "GET", "/api/v1/escalations", params={"external_id": external_id, "limit": 1}
        )
        results = page.get("results", [])
        return Escalation.from_api(results[0]) if results else None

    async def wait(self, escalation_id: str, *, timeout: float | None = None) -> Escalation:
        settings = self._settings
        deadline = None if timeout is None else time.monotonic() + timeout
        attempt = 0
        while True:
            poll = settings.poll_for(deadline)
            try:
                data = await self._send(
                    "GET",
                    f"/api/v1/escalations/{escalation_id}/wait",
                    params={"timeout": f"{poll:.3f}"},
                    timeout=httpx.Timeout(poll + 15, connect=10),
                    retries=0,
                )
            except _TRANSIENT as exc:
                await asyncio.sleep(settings.wait_delay(exc, attempt, deadline))
                attempt += 1
                continue
            attempt = 0
            escalation = Escalation.from_api(data)
            if escalation.is_terminal or (deadline is not None and time.monotonic() >= deadline):
                return escalation

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
        body = _approval_body(
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
        escalation = await self._resume_or_create(body)
        if not escalation.is_terminal:
            escalation = await self.wait(escalation.id, timeout=wait_timeout)
        decision = outcome(escalation)
        if self._settings.should_verify(verify_receipt):
            await self.verify_receipt(decision)
        return decision

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
        title, context = question_fields(question, context)
        body = create_body(
            kind="question",
            title=title,
            context=context,
            response_schema=answer.json_schema,
            timeout=timeout,
            on_timeout=on_timeout,
            priority=priority,
            external_id=external_id,
            metadata=metadata,
        )
        escalation = await self._resume_or_create(body)
        if not escalation.is_terminal:
            escalation = await self.wait(escalation.id, timeout=wait_timeout)
        return answer.parse(outcome(escalation).response)

    async def verify_receipt(
        self,
        decision: Decision | str | None,
        *,
        action: dict[str, Any] | None = None,
        escalation_id: str | None = None,
    ) -> dict[str, Any]:
        receipt, action, escalation_id = _receipt_inputs(decision, action, escalation_id)

        async def fetch() -> dict[str, Any]:
            return await self._send("GET", JWKS_PATH, auth=False)

        jwks = await self._settings.jwks.aget(receipt_kid(receipt) if receipt else "", fetch)
        return verify_receipt(receipt, action=action, jwks=jwks, escalation_id=escalation_id)

    async def _resume_or_create(self, body: dict[str, Any]) -> Escalation:
        external_id = body.get("external_id")
        earlier = await self.find(external_id) if external_id else None
        if earlier is not None and _resumable(earlier, body):
            return earlier
        return await self.create(**body)
