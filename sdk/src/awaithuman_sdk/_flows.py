"""Every call of the client once, without I/O: ``AwaitHuman`` and ``AsyncAwaitHuman`` drive it.

A flow is a generator (the pattern of ``httpx.Auth.auth_flow``). It yields what it needs done:
a ``Request`` (send it, send back the ``httpx.Response``, or throw in the
``httpx.TransportError``) or a ``Sleep`` (sleep, send back None). Its return value is the
result of the call. So retries, backoff, Idempotency-Keys, paging, resuming by ``external_id``,
the long-poll loop and receipt checks are written and tested once; a client only knows how to
send a request and how to sleep, blocking or awaited.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar
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
ESCALATIONS = "/api/v1/escalations"

T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    """Send this with ``http_client.request(method, url, **options)``."""

    method: str
    url: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Sleep:
    seconds: float


Flow = Generator[Request | Sleep, Any, T]


class Settings:
    """What a client is configured with, resolved once (environment, defaults, extras)."""

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


def send(
    settings: Settings,
    method: str,
    path: str,
    *,
    json: Any = None,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | httpx.Timeout | None = None,
    retries: int | None = None,
    auth: bool = True,
) -> Flow[Any]:
    """One API call, retried on transport errors, 429, 5xx and an in-flight Idempotency-Key;
    returns the decoded JSON body or raises the ``APIError`` of the problem."""
    retries = settings.max_retries if retries is None else retries
    request = Request(
        method,
        settings.base_url + path,
        {
            "json": json,
            "params": params,
            "headers": {**settings.headers(auth=auth), **(headers or {})},
            "timeout": timeout if timeout is not None else settings.timeout,
        },
    )
    attempt = 0
    while True:
        try:
            response = yield request
        except httpx.TransportError as exc:
            if attempt >= retries:
                raise ConnectionFailed(f"{method} {path}: {exc!r}") from exc
            delay = backoff(attempt)
        else:
            if attempt >= retries or not should_retry(response, idempotent=True):
                raise_for_problem(response)
                return response.json()
            delay = retry_delay(attempt, response)
        yield Sleep(delay)
        attempt += 1


def create(
    settings: Settings, *, idempotency_key: str | None = None, **fields: Any
) -> Flow[Escalation]:
    # One key per logical create, made before the first attempt: every retry carries it.
    key = idempotency_key or f"sdk-{uuid.uuid4().hex}"
    data = yield from send(
        settings, "POST", ESCALATIONS, json=create_body(**fields), headers={"Idempotency-Key": key}
    )
    return Escalation.from_api(data)


def get(settings: Settings, escalation_id: str) -> Flow[Escalation]:
    return Escalation.from_api((yield from send(settings, "GET", f"{ESCALATIONS}/{escalation_id}")))


def cancel(settings: Settings, escalation_id: str) -> Flow[Escalation]:
    try:
        data = yield from send(settings, "POST", f"{ESCALATIONS}/{escalation_id}/cancel")
    except Conflict as exc:
        if exc.problem.get("escalation_status") != "cancelled":
            raise
        return (yield from get(settings, escalation_id))
    return Escalation.from_api(data)


def list_params(**filters: Any) -> dict[str, Any]:
    """The first page's query: the filters that are set."""
    return {key: value for key, value in filters.items() if value is not None}


def page(
    settings: Settings, params: dict[str, Any]
) -> Flow[tuple[list[Escalation], dict[str, Any] | None]]:
    """One page of the list, and the query of the next page (None after the last)."""
    data = yield from send(settings, "GET", ESCALATIONS, params=params)
    escalations = [Escalation.from_api(item) for item in data.get("results", [])]
    next_url = data.get("next")
    cursor = (parse_qs(urlsplit(next_url).query).get("cursor") or [None])[0] if next_url else None
    return escalations, None if cursor is None else {**params, "cursor": cursor}


def find(settings: Settings, external_id: str) -> Flow[Escalation | None]:
    data = yield from send(
        settings, "GET", ESCALATIONS, params={"external_id": external_id, "limit": 1}
    )
    results = data.get("results", [])
    return Escalation.from_api(results[0]) if results else None


def wait(settings: Settings, escalation_id: str, *, timeout: float | None) -> Flow[Escalation]:
    deadline = None if timeout is None else time.monotonic() + timeout
    attempt = 0
    while True:
        poll = settings.poll_for(deadline)
        try:
            data = yield from send(
                settings,
                "GET",
                f"{ESCALATIONS}/{escalation_id}/wait",
                params={"timeout": f"{poll:.3f}"},
                timeout=httpx.Timeout(poll + 15, connect=10),
                retries=0,
            )
        except _TRANSIENT as exc:
            yield Sleep(settings.wait_delay(exc, attempt, deadline))
            attempt += 1
            continue
        attempt = 0
        escalation = Escalation.from_api(data)
        if escalation.is_terminal or (deadline is not None and time.monotonic() >= deadline):
            return escalation


def approval_body(action: Any, title: str | None, **fields: Any) -> dict[str, Any]:
    action = normalize_action(action)
    return create_body(
        kind="approval", title=title or default_title(action), action=action, **fields
    )


def question_body(question: str, answer: AnswerSchema, **fields: Any) -> dict[str, Any]:
    title, context = question_fields(question, fields.pop("context"))
    return create_body(
        kind="question", title=title, context=context, response_schema=answer.json_schema, **fields
    )


def request_approval(
    settings: Settings,
    body: dict[str, Any],
    *,
    wait_timeout: float | None,
    verify: bool | None,
) -> Flow[Decision]:
    escalation = yield from _decided(settings, body, wait_timeout)
    decision = outcome(escalation)
    if settings.should_verify(verify):
        yield from check_receipt(settings, decision)
    return decision


def ask(
    settings: Settings,
    body: dict[str, Any],
    answer: AnswerSchema,
    *,
    wait_timeout: float | None,
) -> Flow[Any]:
    escalation = yield from _decided(settings, body, wait_timeout)
    return answer.parse(outcome(escalation).response)


def check_receipt(
    settings: Settings,
    decision: Decision | str | None,
    *,
    action: dict[str, Any] | None = None,
    escalation_id: str | None = None,
) -> Flow[dict[str, Any]]:
    """Verify a receipt against the action about to run (default: the approved action of
    ``decision``), fetching the JWKS when the cached copy does not know the key."""
    if isinstance(decision, Decision):
        receipt = decision.receipt
        action = action if action is not None else decision.action
        escalation_id = escalation_id or decision.escalation_id
    else:
        receipt = decision
    kid = receipt_kid(receipt) if receipt else ""
    jwks = settings.jwks.fresh(kid)
    if jwks is None:
        jwks = settings.jwks.store((yield from send(settings, "GET", JWKS_PATH, auth=False)))
    return verify_receipt(receipt, action=action, jwks=jwks, escalation_id=escalation_id)


def _decided(
    settings: Settings, body: dict[str, Any], wait_timeout: float | None
) -> Flow[Escalation]:
    escalation = yield from _resume_or_create(settings, body)
    if not escalation.is_terminal:
        escalation = yield from wait(settings, escalation.id, timeout=wait_timeout)
    return escalation


def _resume_or_create(settings: Settings, body: dict[str, Any]) -> Flow[Escalation]:
    """Resume the newest escalation with this ``external_id`` when it is the same request
    (same kind and action, or same question) and was not withdrawn; else create one."""
    external_id = body.get("external_id")
    earlier = (yield from find(settings, external_id)) if external_id else None
    if earlier is not None and same_request(
        earlier, kind=body["kind"], action=body.get("action"), title=body["title"]
    ):
        logger.info("awaithuman-sdk: resuming %s (external_id %s)", earlier.id, external_id)
        return earlier
    return (yield from create(settings, **body))
