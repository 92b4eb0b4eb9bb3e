"""OpenAI: put tool calls from Chat Completions and the Responses API through approval.

    from awaithuman_sdk import ApprovalGate, AwaitHuman
    from awaithuman_sdk.openai import run_chat_tool_calls, run_response_function_calls

    gate = ApprovalGate(AwaitHuman(), {"issue_refund": issue_refund}, require=["issue_refund"])

    # Chat Completions
    message = completion.choices[0].message
    messages.append(message)
    messages += run_chat_tool_calls(gate, message, messages=messages)

    # Responses API
    input_items += response.output
    input_items += run_response_function_calls(gate, response)

Each returned item carries the tool's output, or, when a human rejected the call, a sentence
with their reason, so the model can adapt. Works on the ``openai`` package's objects and on
plain dicts of the same shape; the package itself is not imported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._adapters import context_of, field, parse_arguments
from .tools import ApprovalGate, ToolRun


def _chat_calls(message: Any) -> list[tuple[str, str, Any]]:
    calls = []
    for call in field(message, "tool_calls") or []:
        if field(call, "type", "function") != "function":
            continue  # custom (free-form) tools carry no JSON arguments to approve
        function = field(call, "function")
        calls.append((field(call, "id"), field(function, "name"), field(function, "arguments")))
    return calls


def _response_calls(response: Any) -> list[tuple[str, str, Any]]:
    output = field(response, "output", response)
    return [
        (field(item, "call_id"), field(item, "name"), field(item, "arguments"))
        for item in output or []
        if field(item, "type") == "function_call"
    ]


def _response_reasoning(response: Any) -> str:
    texts = []
    for item in field(response, "output", response) or []:
        if field(item, "type") == "message":
            for part in field(item, "content") or []:
                if field(part, "type") == "output_text":
                    texts.append(field(part, "text", ""))
        elif field(item, "type") == "reasoning":
            for part in field(item, "summary") or []:
                texts.append(field(part, "text", ""))
    return "\n".join(text for text in texts if text)


def _context(reasoning: str, calls: list[tuple[str, str, Any]], messages: Any) -> dict[str, Any]:
    tool_calls = [
        {"id": call_id, "name": name, "arguments": parse_arguments(raw)[0] or raw}
        for call_id, name, raw in calls
    ]
    return context_of(reasoning=reasoning, tool_calls=tool_calls, messages=messages)


def _run(gate: ApprovalGate, name: str, raw: Any, context: dict[str, Any]) -> str:
    arguments, error = parse_arguments(raw)
    if error is not None:
        return error
    assert arguments is not None
    return gate.run(name, arguments, context=context).output


async def _arun(gate: ApprovalGate, name: str, raw: Any, context: dict[str, Any]) -> str:
    arguments, error = parse_arguments(raw)
    if error is not None:
        return error
    assert arguments is not None
    run: ToolRun = await gate.arun(name, arguments, context=context)
    return run.output


def run_chat_tool_calls(
    gate: ApprovalGate, message: Any, *, messages: Iterable[Any] | None = None
) -> list[dict[str, Any]]:
    """Run the ``tool_calls`` of a Chat Completions assistant message; return the ``tool``
    messages to append (one per call, in order)."""
    calls = _chat_calls(message)
    context = _context(field(message, "content") or "", calls, messages)
    return [
        {"role": "tool", "tool_call_id": call_id, "content": _run(gate, name, raw, context)}
        for call_id, name, raw in calls
    ]


async def arun_chat_tool_calls(
    gate: ApprovalGate, message: Any, *, messages: Iterable[Any] | None = None
) -> list[dict[str, Any]]:
    calls = _chat_calls(message)
    context = _context(field(message, "content") or "", calls, messages)
    return [
        {"role": "tool", "tool_call_id": call_id, "content": await _arun(gate, name, raw, context)}
        for call_id, name, raw in calls
    ]


def run_response_function_calls(
    gate: ApprovalGate, response: Any, *, input_items: Iterable[Any] | None = None
) -> list[dict[str, Any]]:
    """Run the ``function_call`` items of a Responses API response; return the
    ``function_call_output`` items for the next request's ``input``."""
    calls = _response_calls(response)
    context = _context(_response_reasoning(response), calls, input_items)
    return [
        {
            "type": "function_call_output",
            "call_id": call_id,
            "output": _run(gate, name, raw, context),
        }
        for call_id, name, raw in calls
    ]


async def arun_response_function_calls(
    gate: ApprovalGate, response: Any, *, input_items: Iterable[Any] | None = None
) -> list[dict[str, Any]]:
    calls = _response_calls(response)
    context = _context(_response_reasoning(response), calls, input_items)
    return [
        {
            "type": "function_call_output",
            "call_id": call_id,
            "output": await _arun(gate, name, raw, context),
        }
        for call_id, name, raw in calls
    ]
