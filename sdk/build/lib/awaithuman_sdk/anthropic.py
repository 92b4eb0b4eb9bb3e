"""Anthropic: put ``tool_use`` blocks through approval and answer with ``tool_result`` blocks.

    from awaithuman_sdk import ApprovalGate, AwaitHuman
    from awaithuman_sdk.anthropic import run_tool_uses

    gate = ApprovalGate(AwaitHuman(), {"issue_refund": issue_refund}, require=["issue_refund"])
    message = client.messages.create(model=…, tools=…, messages=messages)
    messages.append({"role": message.role, "content": message.content})
    messages.append(run_tool_uses(gate, message, messages=messages))

A rejected call comes back as a ``tool_result`` with ``is_error: true`` and the human's reason.
Works on the ``anthropic`` package's objects and on plain dicts; the package is not imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._adapters import context_of, field
from .tools import ApprovalGate, ToolRun


def _tool_uses(message: Any) -> list[Any]:
    return [
        block for block in field(message, "content") or [] if field(block, "type") == "tool_use"
    ]


def _context(message: Any, messages: Iterable[Any] | None) -> dict[str, Any]:
    blocks = field(message, "content") or []
    reasoning = "\n".join(
        field(block, "text", "") for block in blocks if field(block, "type") == "text"
    )
    tool_calls = [
        {"id": field(block, "id"), "name": field(block, "name"), "arguments": field(block, "input")}
        for block in _tool_uses(message)
    ]
    return context_of(reasoning=reasoning, tool_calls=tool_calls, messages=messages)


def _result(block: Any, run: ToolRun) -> dict[str, Any]:
    result: dict[str, Any] = {
        "type": "tool_result",
        "tool_use_id": field(block, "id"),
        "content": run.output,
    }
    if run.approved is False:
        result["is_error"] = True
    return result


def _bad_input(block: Any) -> ToolRun:
    name = field(block, "name")
    return ToolRun(name, {}, "Error: the tool input must be a JSON object.", approved=False)


def run_tool_uses(
    gate: ApprovalGate, message: Any, *, messages: Iterable[Any] | None = None
) -> dict[str, Any]:
    """Run every ``tool_use`` block of an assistant message through the gate; return the
    ``user`` message holding one ``tool_result`` per block."""
    context = _context(message, messages)
    results = []
    for block in _tool_uses(message):
        arguments = field(block, "input")
        if isinstance(arguments, dict):
            run = gate.run(field(block, "name"), arguments, context=context)
        else:
            run = _bad_input(block)
        results.append(_result(block, run))
    return {"role": "user", "content": results}


async def arun_tool_uses(
    gate: ApprovalGate, message: Any, *, messages: Iterable[Any] | None = None
) -> dict[str, Any]:
    context = _context(message, messages)
    results = []
    for block in _tool_uses(message):
        arguments = field(block, "input")
        if isinstance(arguments, dict):
            run = await gate.arun(field(block, "name"), arguments, context=context)
        else:
            run = _bad_input(block)
        results.append(_result(block, run))
    return {"role": "user", "content": results}
