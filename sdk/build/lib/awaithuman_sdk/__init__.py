"""AwaitHuman SDK: ask a human before acting, wait for the decision, get a typed answer.

    from awaithuman_sdk import AwaitHuman

    client = AwaitHuman()  # AWAITHUMAN_API_KEY, AWAITHUMAN_BASE_URL
    decision = client.request_approval(
        action={"name": "issue_refund", "arguments": {"order": 1042, "amount": 750}},
        context={"reasoning": "The customer was charged twice."},
    )
    issue_refund(**decision.arguments)  # the human's edits applied, the receipt verified

The core depends on httpx only. Extras: ``[receipts]`` (verify decision receipts),
``[pydantic]``, ``[openai]``, ``[anthropic]``, ``[langchain]``, ``[mcp]``.
"""

from __future__ import annotations

from .callbacks import verify_callback
from .client import AsyncAwaitHuman, AwaitHuman
from .errors import (
    APIError,
    AuthError,
    AwaitHumanError,
    Cancelled,
    Conflict,
    ConnectionFailed,
    MissingDependency,
    NotApproved,
    NotFound,
    RateLimited,
    ReceiptError,
    Rejected,
    ServerError,
    TimedOut,
    ValidationError,
    WebhookVerificationError,
)
from .models import Decision, Escalation
from .receipts import action_hash, verify_receipt
from .tools import ApprovalGate, ToolRun, require_approval

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "ApprovalGate",
    "AsyncAwaitHuman",
    "AuthError",
    "AwaitHuman",
    "AwaitHumanError",
    "Cancelled",
    "Conflict",
    "ConnectionFailed",
    "Decision",
    "Escalation",
    "MissingDependency",
    "NotApproved",
    "NotFound",
    "RateLimited",
    "ReceiptError",
    "Rejected",
    "ServerError",
    "TimedOut",
    "ToolRun",
    "ValidationError",
    "WebhookVerificationError",
    "action_hash",
    "require_approval",
    "verify_callback",
    "verify_receipt",
]
