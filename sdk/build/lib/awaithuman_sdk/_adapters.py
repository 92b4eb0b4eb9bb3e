"""Small helpers the framework adapters share: read provider objects or plain dicts alike, and
make the agent's context JSON-able for the escalation."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def field(obj: Any, name: str, default: Any = None) -> Any:
    """``obj.name`` for SDK objects (pydantic models), ``obj[name]`` for dicts."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def plain(value: Any) -> Any:
    """A JSON-able copy of a provider object (pydantic ``model_dump``) or of plain data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def parse_arguments(raw: Any) -> tuple[dict[str, Any] | None, str | None]:
    """Tool-call arguments as a dict, or an error text for the model when they are not."""
    if isinstance(raw, dict):
        return raw, None
    try:
        parsed = json.loads(raw or "{}")
    except (TypeError, json.JSONDecodeError) as exc:
        return None, f"Error: the arguments are not valid JSON ({exc}); call the tool again."
    if not isinstance(parsed, dict):
        return None, "Error: the arguments must be a JSON object; call the tool again."
    return parsed, None


def context_of(
    *, reasoning: str, tool_calls: list[dict[str, Any]], messages: Iterable[Any] | None
) -> dict[str, Any]:
    context: dict[str, Any] = {"reasoning": reasoning, "tool_calls": tool_calls}
    if messages is not None:
        context["messages"] = [plain(message) for message in messages]
    return context
