"""What the sync and async clients share: request bodies, error mapping, retry timing, and
turning a terminal escalation into a ``Decision`` or the right exception. No I/O here."""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Mapping
from typing import Any

import httpx

from .errors import (
    APIError,
    AuthError,
    Cancelled,
    Conflict,
    NotFound,
    RateLimited,
    Rejected,
    ServerError,
    TimedOut,
    ValidationError,
)
from .models import Decision, Escalation

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
USER_AGENT = "awaithuman-sdk-python/0.1"
# Statuses worth another try: throttled, or the server (or a proxy in front) is in trouble.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 300.0
TITLE_MAX = 300

_ERRORS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: AuthError,
    403: AuthError,
    404: NotFound,
    409: Conflict,
    422: ValidationError,
    429: RateLimited,
}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), capped; None when absent."""
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        if parsed is None:
            return None
        seconds = parsed.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def backoff(attempt: int, *, base: float = 0.5, cap: float = 20.0) -> float:
    """Exponential backoff with jitter: half fixed, half random, so a herd spreads out."""
    ceiling = min(cap, base * 2**attempt)
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def retry_delay(attempt: int, response: httpx.Response | None = None) -> float:
    if response is not None:
        after = retry_after_seconds(response)
        if after is not None:
            # Honour it, plus a little jitter so throttled clients do not return in lockstep.
            return after + random.uniform(0, min(1.0, after * 0.1 + 0.1))
    return backoff(attempt)


def should_retry(response: httpx.Response, *, idempotent: bool) -> bool:
    if response.status_code in RETRY_STATUSES:
        return idempotent or response.status_code == 429
    # The same Idempotency-Key is still being processed by the first attempt: ask again shortly.
    return response.status_code == 409 and _problem(response).get("type", "").endswith(
        "/idempotency-in-flight"
    )


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"detail": response.text[:500]}
    return body if isinstance(body, dict) else {"detail": str(body)[:500]}


def raise_for_problem(response: httpx.Response) -> None:
    if response.is_success:
        return
    status = response.status_code
    cls = _ERRORS.get(status) or (ServerError if status >= 500 else APIError)
    raise cls(
        status,
        _problem(response),
        retry_after=retry_after_seconds(response),
        request_id=response.headers.get("X-Request-Id"),
    )


def normalize_action(action: Any) -> dict[str, Any]:
    """``{"name": …, "arguments": {…}}`` from that dict or a ``(name, arguments)`` pair."""
    if isinstance(action, Mapping):
        name, arguments = action.get("name"), action.get("arguments", {})
    elif isinstance(action, tuple) and len(action) == 2:
        name, arguments = action
    else:
        raise TypeError('action must be {"name": str, "arguments": dict} or (name, arguments)')
    if not isinstance(name, str) or not name:
        raise TypeError("action name must be a non-empty string")
    if not isinstance(arguments, Mapping):
        raise TypeError("action arguments must be a dict")
    return {"name": name, "arguments": dict(arguments)}


def default_title(action: dict[str, Any]) -> str:
    shown = ", ".join(f"{key}={value!r}" for key, value in action["arguments"].items())
    title = f"Approve {action['name']}({shown})"
    return title if len(title) <= TITLE_MAX else title[: TITLE_MAX - 1] + "…"


def create_body(**fields: Any) -> dict[str, Any]:
    """The create request: unset (None) fields are left out so server defaults apply."""
    timeout = fields.pop("timeout", None)
    if timeout is not None:
        fields["timeout_seconds"] = int(timeout)
    return {key: value for key, value in fields.items() if value is not None}


def question_fields(question: str, context: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """A long question goes whole into the context; the title holds what fits."""
    context = dict(context or {})
    if len(question) <= TITLE_MAX:
        return question, context
    context.setdefault("question", question)
    return question[: TITLE_MAX - 1] + "…", context


def same_request(escalation: Escalation, *, kind: str, action: Any, title: str) -> bool:
    """Is this earlier escalation (found by ``external_id``) the request being made again?"""
    if escalation.kind != kind or escalation.status == "cancelled":
        return False
    if kind == "approval":
        return escalation.action == action
    return escalation.title == title


def outcome(escalation: Escalation) -> Decision:
    """The decision of a terminal escalation if it lets the agent go ahead; else raise."""
    decision = escalation.decision
    if not escalation.is_terminal or decision is None:
        raise TimedOut(
            f"No decision yet; escalation {escalation.id} is still {escalation.status}.",
            escalation=escalation,
            decision=None,
        )
    if decision.outcome in ("approved", "answered"):
        return decision
    if decision.outcome == "cancelled":
        raise Cancelled(decision.reason, escalation=escalation, decision=decision)
    if decision.outcome == "expired" or decision.decided_by.get("type") == "timeout":
        raise TimedOut(decision.reason, escalation=escalation, decision=decision)
    raise Rejected(decision.reason, escalation=escalation, decision=decision)


class AnswerSchema:
    """``schema`` of ``ask()``: None (free text), a JSON Schema dict, or a Pydantic model class."""

    def __init__(self, schema: Any) -> None:
        self.model = None
        if schema is None:
            self.json_schema = None
        elif isinstance(schema, Mapping):
            self.json_schema = dict(schema)
        elif hasattr(schema, "model_json_schema") and hasattr(schema, "model_validate"):
            self.model = schema
            self.json_schema = schema.model_json_schema()
        else:
            raise TypeError("schema must be None, a JSON Schema dict or a Pydantic model class")

    def parse(self, response: Any) -> Any:
        if self.model is not None:
            return self.model.model_validate(response)
        if self.json_schema is None and isinstance(response, dict):
            return response.get("answer")
        return response
