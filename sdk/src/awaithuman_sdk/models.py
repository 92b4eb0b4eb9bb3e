"""Typed views of the API's escalation object and its decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

TERMINAL = frozenset({"approved", "rejected", "answered", "expired", "cancelled"})


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Decision:
    """How an escalation ended. ``action`` is what may now run: edits applied."""

    escalation_id: str
    outcome: str
    response: Any = None
    comment: str = ""
    edited_arguments: dict[str, Any] | None = None
    decided_by: dict[str, Any] = field(default_factory=dict)
    decided_at: datetime | None = None
    channel: str | None = None
    receipt: str | None = None
    action: dict[str, Any] | None = None

    @property
    def approved(self) -> bool:
        return self.outcome == "approved"

    @property
    def arguments(self) -> dict[str, Any] | None:
        """The arguments to run the approved action with (the human's edits, if any)."""
        return None if self.action is None else self.action["arguments"]

    @property
    def edited(self) -> bool:
        return self.edited_arguments is not None

    @property
    def reason(self) -> str:
        """One sentence for the agent's model: what happened and why."""
        who = self.decided_by.get("email") or self.decided_by.get("name") or ""
        by = {
            "user": f"a human ({who})" if who else "a human",
            "policy": f"policy “{self.decided_by.get('name', '')}”",
            "timeout": "the deadline (no one answered in time)",
            "agent": "the agent itself",
        }.get(self.decided_by.get("type", ""), "someone")
        text = f"{self.outcome.capitalize()} by {by}."
        if self.comment:
            text += f" Comment: {self.comment}"
        return text

    @classmethod
    def from_escalation(cls, data: dict[str, Any]) -> Decision | None:
        decision = data.get("decision")
        if not decision:
            return None
        action = data.get("action")
        approved_action = None
        if action:
            arguments = decision.get("edited_arguments")
            if arguments is None:
                arguments = action.get("arguments") or {}
            approved_action = {"name": action["name"], "arguments": arguments}
        return cls(
            escalation_id=data["id"],
            outcome=decision["outcome"],
            response=decision.get("response"),
            comment=decision.get("comment") or "",
            edited_arguments=decision.get("edited_arguments"),
            decided_by=decision.get("decided_by") or {},
            decided_at=_when(decision.get("decided_at")),
            channel=decision.get("channel"),
            receipt=decision.get("receipt"),
            action=approved_action,
        )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-able form (for LangGraph ``Command(resume=…)``, MCP results, logs)."""
        return {
            "escalation_id": self.escalation_id,
            "outcome": self.outcome,
            "approved": self.approved,
            "response": self.response,
            "comment": self.comment,
            "edited_arguments": self.edited_arguments,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "channel": self.channel,
            "receipt": self.receipt,
            "action": self.action,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        return cls(
            escalation_id=data["escalation_id"],
            outcome=data["outcome"],
            response=data.get("response"),
            comment=data.get("comment") or "",
            edited_arguments=data.get("edited_arguments"),
            decided_by=data.get("decided_by") or {},
            decided_at=_when(data.get("decided_at")),
            channel=data.get("channel"),
            receipt=data.get("receipt"),
            action=data.get("action"),
        )


@dataclass(frozen=True)
class Escalation:
    """One escalation as the API returns it; ``raw`` keeps the whole JSON object."""

    id: str
    status: str
    kind: str
    title: str
    action: dict[str, Any] | None
    context: dict[str, Any]
    response_schema: dict[str, Any] | None
    external_id: str
    metadata: dict[str, Any]
    created_at: datetime | None
    expires_at: datetime | None
    decision: Decision | None
    links: dict[str, str]
    raw: dict[str, Any] = field(repr=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Escalation:
        return cls(
            id=data["id"],
            status=data["status"],
            kind=data.get("kind", ""),
            title=data.get("title", ""),
            action=data.get("action"),
            context=data.get("context") or {},
            response_schema=data.get("response_schema"),
            external_id=data.get("external_id") or "",
            metadata=data.get("metadata") or {},
            created_at=_when(data.get("created_at")),
            expires_at=_when(data.get("expires_at")),
            decision=Decision.from_escalation(data),
            links=data.get("links") or {},
            raw=data,
        )
