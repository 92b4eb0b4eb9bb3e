"""Every exception the SDK raises derives from ``AwaitHumanError``.

Two families: ``APIError`` (the server refused a request: the RFC 9457 problem document is kept
on the exception) and ``NotApproved`` (the escalation ended without a go-ahead: ``Rejected``,
``TimedOut``, ``Cancelled``; each carries the human-readable ``reason`` to hand to the model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Decision, Escalation


class AwaitHumanError(Exception):
    """Base class of every SDK error."""


class ConnectionFailed(AwaitHumanError):
    """The server could not be reached (after the retries)."""


class APIError(AwaitHumanError):
    """The server answered with an error. ``problem`` is the RFC 9457 body as sent."""

    def __init__(
        self,
        status: int,
        problem: dict[str, Any],
        *,
        retry_after: float | None = None,
        request_id: str | None = None,
    ) -> None:
        self.status = status
        self.problem = problem
        self.detail: str = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
        self.type: str = str(problem.get("type") or "")
        self.retry_after = retry_after
        self.request_id = request_id
        super().__init__(f"{status}: {self.detail}")

    @property
    def type_slug(self) -> str:
        """The last segment of the problem ``type`` (e.g. ``idempotency-in-flight``)."""
        return self.type.rstrip("/").rsplit("/", 1)[-1]


class AuthError(APIError):
    """401 (missing, wrong, revoked or expired key) or 403 (the key lacks a scope)."""


class ValidationError(APIError):
    """400 or 422: ``errors`` maps each bad field to its messages."""

    def __init__(self, status: int, problem: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(status, problem, **kwargs)
        self.errors: dict[str, list[str]] = dict(problem.get("errors") or {})


class NotFound(APIError):
    """404: no such escalation in this organization."""


class Conflict(APIError):
    """409: e.g. the escalation is already terminal."""


class RateLimited(APIError):
    """429 after the retries ran out; ``retry_after`` says when to come back."""


class ServerError(APIError):
    """5xx after the retries ran out."""


class NotApproved(AwaitHumanError):
    """The escalation ended without approval. ``reason`` is meant for the agent's model."""

    def __init__(self, reason: str, *, escalation: Escalation, decision: Decision | None) -> None:
        self.reason = reason
        self.escalation = escalation
        self.decision = decision
        super().__init__(reason)


class Rejected(NotApproved):
    """A human (or a policy) said no; ``reason`` is their comment."""


class TimedOut(NotApproved):
    """No one decided in time: the escalation expired or was rejected by its ``on_timeout``,
    or ``wait_timeout`` ran out on the client while it was still pending."""


class Cancelled(NotApproved):
    """The agent withdrew the escalation."""


class ReceiptError(AwaitHumanError):
    """A decision receipt is missing, forged, expired, signed by an unknown key, or covers
    another action than the one about to run. Do not execute."""


class WebhookVerificationError(AwaitHumanError):
    """A callback's signature or timestamp does not check out. Do not trust its body."""


class MissingDependency(AwaitHumanError, ImportError):
    """An optional dependency (an extra) is not installed."""
