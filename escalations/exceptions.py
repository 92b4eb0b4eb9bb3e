"""The escalation domain's refusals: plain exceptions its services raise.

Each says, in words fit to show a person, what was refused and why; ``code`` is a stable slug
(the API uses it as the problem ``type``), ``errors`` maps input fields to their messages and
``extra`` carries facts a client may act on (who holds the claim). Nothing here knows about HTTP:
the API renders a refusal as problem+json (``awaithuman.problems``), the console as a message.
"""

from __future__ import annotations

from typing import Any


class EscalationError(Exception):
    code = "error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        errors: dict[str, list[str]] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.code
        self.errors = errors
        self.extra = extra


class NotAllowed(EscalationError):
    """The person or agent asking may never do this, whatever the escalation's state."""

    code = "forbidden"


class Conflict(EscalationError):
    """The escalation's current state (decided, claimed, answered) does not allow this now."""

    code = "conflict"


class InvalidInput(EscalationError):
    """Input the domain checks itself (against the escalation, not just its shape)."""

    code = "validation-error"

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(
            f"The request has invalid fields: {', '.join(sorted(errors))}.", errors=errors
        )

    @classmethod
    def field(cls, name: str, message: str) -> InvalidInput:
        return cls({name: [message]})
