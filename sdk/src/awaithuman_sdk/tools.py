"""Approval in front of tool functions: the ``@require_approval`` decorator and the
``ApprovalGate`` that the framework adapters (OpenAI, Anthropic, LangChain) share.

A gated call asks a human with the exact tool name and arguments, runs the tool with the
arguments the human approved (edits applied) after checking the decision receipt against them,
and otherwise tells the model why it did not run, so it can adapt.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .client import AsyncAwaitHuman, AwaitHuman
from .errors import NotApproved
from .models import Decision

Arguments = dict[str, Any]
Condition = Callable[[str, Arguments], bool]


@dataclass(frozen=True)
class ToolRun:
    """One tool call after the gate: ``output`` is the text to hand back to the model."""

    name: str
    arguments: Arguments
    output: str
    approved: bool | None  # None: no approval was needed
    decision: Decision | None = None
    result: Any = None


def rejection_text(name: str, error: NotApproved) -> str:
    return f"Not done: `{name}` was not approved. {error.reason} Do not retry it unchanged."


def result_text(result: Any) -> str:
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)


def approved_output(name: str, result: Any, decision: Decision | None) -> str:
    text = result_text(result)
    if decision is None:
        return text
    notes = []
    if decision.edited:
        notes.append(
            f"A human approved `{name}` with edited arguments "
            f"{json.dumps(decision.arguments, ensure_ascii=False)}; it ran with those."
        )
    if decision.comment:
        notes.append(f"Approver's comment: {decision.comment}")
    return "\n".join([*notes, text]) if notes else text


def _resolve(value: Any, arguments: Arguments) -> Any:
    return value(arguments) if callable(value) else value


class ApprovalGate:
    """Tool functions by name, and which calls need a human.

    ``require``: None (every call), an iterable of tool names, or ``condition(name, arguments)``.
    ``title``: a fixed value or a callable of ``(name, arguments)``. ``timeout`` /
    ``on_timeout``: the human's deadline; ``wait_timeout``: how long a call blocks at most
    (then the model is told it was not approved in time).
    """

    def __init__(
        self,
        client: AwaitHuman | AsyncAwaitHuman,
        tools: Mapping[str, Callable[..., Any]] | Iterable[Callable[..., Any]],
        *,
        require: Iterable[str] | Condition | None = None,
        title: str | Callable[[str, Arguments], str] | None = None,
        timeout: int | None = None,
        on_timeout: str | None = None,
        wait_timeout: float | None = None,
        verify_receipt: bool | None = None,
    ) -> None:
        self.client = client
        if isinstance(tools, Mapping):
            self.tools = dict(tools)
        else:
            self.tools = {getattr(fn, "__name__", str(fn)): fn for fn in tools}
        if require is None or callable(require):
            self._condition = require
        else:
            names = frozenset(require)
            self._condition = lambda name, _arguments: name in names
        self.title = title
        self.timeout = timeout
        self.on_timeout = on_timeout
        self.wait_timeout = wait_timeout
        self.verify_receipt = verify_receipt

    def needs_approval(self, name: str, arguments: Arguments) -> bool:
        return self._condition is None or bool(self._condition(name, arguments))

    def _request(self, name: str, arguments: Arguments, context: dict[str, Any] | None) -> dict:
        title = self.title(name, arguments) if callable(self.title) else self.title
        return {
            "action": {"name": name, "arguments": arguments},
            "title": title,
            "context": context,
            "timeout": self.timeout,
            "on_timeout": self.on_timeout,
            "wait_timeout": self.wait_timeout,
            "verify_receipt": self.verify_receipt,
        }

    def _unknown(self, name: str, arguments: Arguments) -> ToolRun:
        return ToolRun(name, arguments, f"Error: there is no tool named `{name}`.", approved=None)

    def run(
        self, name: str, arguments: Arguments, *, context: dict[str, Any] | None = None
    ) -> ToolRun:
        """Run one tool call through the gate (blocking client)."""
        if not isinstance(self.client, AwaitHuman):
            raise TypeError("ApprovalGate.run needs an AwaitHuman client; use arun for async")
        fn = self.tools.get(name)
        if fn is None:
            return self._unknown(name, arguments)
        decision = None
        if self.needs_approval(name, arguments):
            try:
                decision = self.client.request_approval(**self._request(name, arguments, context))
            except NotApproved as exc:
                return ToolRun(name, arguments, rejection_text(name, exc), False, exc.decision)
            arguments = decision.arguments or {}
        result = fn(**arguments)
        if inspect.isawaitable(result):
            raise TypeError(f"tool {name!r} is async; use arun")
        return ToolRun(
            name,
            arguments,
            approved_output(name, result, decision),
            None if decision is None else True,
            decision,
            result,
        )

    async def arun(
        self, name: str, arguments: Arguments, *, context: dict[str, Any] | None = None
    ) -> ToolRun:
        """Run one tool call through the gate (async client; sync tools run in a thread)."""
        fn = self.tools.get(name)
        if fn is None:
            return self._unknown(name, arguments)
        decision = None
        if self.needs_approval(name, arguments):
            request = self._request(name, arguments, context)
            try:
                if isinstance(self.client, AsyncAwaitHuman):
                    decision = await self.client.request_approval(**request)
                else:
                    decision = await asyncio.to_thread(
                        functools.partial(self.client.request_approval, **request)
                    )
            except NotApproved as exc:
                return ToolRun(name, arguments, rejection_text(name, exc), False, exc.decision)
            arguments = decision.arguments or {}
        if inspect.iscoroutinefunction(fn):
            result = await fn(**arguments)
        else:
            result = await asyncio.to_thread(functools.partial(fn, **arguments))
        return ToolRun(
            name,
            arguments,
            approved_output(name, result, decision),
            None if decision is None else True,
            decision,
            result,
        )


def require_approval(
    client: AwaitHuman | AsyncAwaitHuman | None = None,
    *,
    name: str | None = None,
    when: Callable[[Arguments], bool] | None = None,
    title: str | Callable[[Arguments], str] | None = None,
    context: dict[str, Any] | Callable[[Arguments], dict[str, Any]] | None = None,
    timeout: int | None = None,
    on_timeout: str | None = None,
    wait_timeout: float | None = None,
    on_reject: str = "return",
    verify_receipt: bool | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make a tool function ask a human first.

    The call's arguments (bound to the function's signature) become the action
    ``{"name": name or fn.__name__, "arguments": {…}}``. ``when(arguments)`` decides whether a
    call needs approval (default: every call). ``title`` and ``context`` may be callables of the
    arguments ("render the action"). On approval the function runs with the approved arguments
    (the human's edits applied; the receipt verified against them). On rejection, timeout or
    cancellation it returns a sentence with the reason for the model (``on_reject="return"``) or
    raises ``Rejected`` / ``TimedOut`` / ``Cancelled`` (``on_reject="raise"``). ``client``
    defaults to one built from ``AWAITHUMAN_API_KEY`` / ``AWAITHUMAN_BASE_URL``.
    """
    if on_reject not in ("return", "raise"):
        raise ValueError("on_reject must be 'return' or 'raise'")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)
        action_name = name or fn.__name__
        is_async = inspect.iscoroutinefunction(fn)
        holder: dict[str, Any] = {"client": client}

        def arguments_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Arguments:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments: Arguments = {}
            for param_name, value in bound.arguments.items():
                kind = signature.parameters[param_name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    arguments.update(value)
                elif kind is inspect.Parameter.VAR_POSITIONAL:
                    raise TypeError(f"{action_name}: *args cannot be approved by name")
                else:
                    arguments[param_name] = value
            return arguments

        def request(arguments: Arguments) -> dict[str, Any]:
            return {
                "action": {"name": action_name, "arguments": arguments},
                "title": _resolve(title, arguments),
                "context": _resolve(context, arguments),
                "timeout": timeout,
                "on_timeout": on_timeout,
                "wait_timeout": wait_timeout,
                "verify_receipt": verify_receipt,
            }

        def refused(exc: NotApproved) -> str:
            if on_reject == "raise":
                raise exc
            return rejection_text(action_name, exc)

        if is_async:

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                arguments = arguments_of(args, kwargs)
                if when is not None and not when(arguments):
                    return await fn(*args, **kwargs)
                gate_client = holder["client"] or holder.setdefault("client", AsyncAwaitHuman())
                try:
                    if isinstance(gate_client, AsyncAwaitHuman):
                        decision = await gate_client.request_approval(**request(arguments))
                    else:
                        decision = await asyncio.to_thread(
                            functools.partial(gate_client.request_approval, **request(arguments))
                        )
                except NotApproved as exc:
                    return refused(exc)
                return await fn(**(decision.arguments or {}))

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            arguments = arguments_of(args, kwargs)
            if when is not None and not when(arguments):
                return fn(*args, **kwargs)
            gate_client = holder["client"]
            if gate_client is None:
                gate_client = holder["client"] = AwaitHuman()
            if not isinstance(gate_client, AwaitHuman):
                raise TypeError(f"{action_name} is not async: give it an AwaitHuman client")
            try:
                decision = gate_client.request_approval(**request(arguments))
            except NotApproved as exc:
                return refused(exc)
            return fn(**(decision.arguments or {}))

        return wrapper

    return decorate
