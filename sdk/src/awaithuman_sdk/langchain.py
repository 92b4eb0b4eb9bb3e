"""LangChain and LangGraph: approval-gated tools, an ``ask_human`` tool, and approvals as
LangGraph interrupts.

Tools (LangChain / ``create_agent`` / prebuilt ReAct agents)::

    from awaithuman_sdk.langchain import approval_tool, ask_human_tool

    tools = [approval_tool(issue_refund, client, when=lambda a: a["amount"] > 500),
             ask_human_tool(client)]

LangGraph ``interrupt()`` / ``Command(resume=…)`` — the node pauses, the graph is checkpointed,
and whoever drives the graph asks the human and resumes it (after a restart too: the escalation
is found again by an ``external_id`` made of the thread and interrupt ids)::

    def refund(state):
        decision = approval_interrupt({"name": "issue_refund", "arguments": {...}})
        if not decision.approved:
            return {"result": decision.reason}
        return {"result": issue_refund(**decision.arguments)}

    result = run_with_approvals(graph, {"order": 1042}, config, client)

Needs ``pip install 'awaithuman-sdk[langchain]'`` (langchain-core; langgraph for the interrupts).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool

from ._core import normalize_action
from .client import AsyncAwaitHuman, AwaitHuman
from .errors import NotApproved
from .models import Decision
from .tools import ApprovalGate

INTERRUPT_KEY = "awaithuman"


def approval_tool(
    tool: BaseTool,
    client: AwaitHuman | AsyncAwaitHuman,
    *,
    when: Callable[[dict[str, Any]], bool] | None = None,
    title: str | Callable[[str, dict[str, Any]], str] | None = None,
    timeout: int | None = None,
    on_timeout: str | None = None,
    wait_timeout: float | None = None,
) -> BaseTool:
    """The same tool (name, description, argument schema) behind a human approval.

    A rejected call returns the human's reason as the tool's output. ``when(arguments)``
    limits approval to some calls.
    """
    require = None if when is None else (lambda _name, arguments: when(arguments))
    options: dict[str, Any] = {
        "require": require,
        "title": title,
        "timeout": timeout,
        "on_timeout": on_timeout,
        "wait_timeout": wait_timeout,
    }

    def invoke(**arguments: Any) -> Any:
        return tool.invoke(arguments)

    async def ainvoke(**arguments: Any) -> Any:
        return await tool.ainvoke(arguments)

    async_gate = ApprovalGate(client, {tool.name: ainvoke}, **options)

    async def run_async(**arguments: Any) -> str:
        return (await async_gate.arun(tool.name, arguments)).output

    func = None
    if isinstance(client, AwaitHuman):
        sync_gate = ApprovalGate(client, {tool.name: invoke}, **options)

        def func(**arguments: Any) -> str:
            return sync_gate.run(tool.name, arguments).output

    return StructuredTool.from_function(
        func=func,
        coroutine=run_async,
        name=tool.name,
        description=tool.description,
        args_schema=tool.args_schema,
    )


def ask_human_tool(
    client: AwaitHuman | AsyncAwaitHuman,
    *,
    name: str = "ask_human",
    description: str = (
        "Ask a human a question when you lack information or need a judgement call; "
        "returns their answer. Put the whole question in `question`."
    ),
    timeout: int | None = None,
) -> BaseTool:
    """A tool the model calls to ask a human; returns the answer text."""

    def answered(answer: Any) -> str:
        return answer if isinstance(answer, str) else str(answer)

    def declined(exc: NotApproved) -> str:
        return f"No answer from a human: {exc.reason}"

    async def ask_async(question: str) -> str:
        try:
            if isinstance(client, AsyncAwaitHuman):
                return answered(await client.ask(question, timeout=timeout))
            return answered(await asyncio.to_thread(client.ask, question, timeout=timeout))
        except NotApproved as exc:
            return declined(exc)

    func = None
    if isinstance(client, AwaitHuman):

        def func(question: str) -> str:
            try:
                return answered(client.ask(question, timeout=timeout))
            except NotApproved as exc:
                return declined(exc)

    return StructuredTool.from_function(
        func=func, coroutine=ask_async, name=name, description=description
    )


# --- LangGraph -------------------------------------------------------------------------------


def approval_interrupt(
    action: Any,
    *,
    title: str | None = None,
    context: dict[str, Any] | None = None,
    timeout: int | None = None,
    on_timeout: str | None = None,
) -> Decision:
    """Inside a LangGraph node: pause the graph until a human decides on ``action``.

    Raises LangGraph's interrupt the first time; when the graph is resumed with the decision
    (``run_with_approvals`` / ``resume_command``) it returns that ``Decision``. Branch on
    ``decision.approved`` and run ``decision.arguments`` (the human's edits applied).
    """
    from langgraph.types import interrupt

    request = {
        "kind": "approval",
        "action": normalize_action(action),
        "title": title,
        "context": context,
        "timeout": timeout,
        "on_timeout": on_timeout,
    }
    resumed = interrupt({INTERRUPT_KEY: request})
    return Decision.from_dict(resumed)


def _ours(pending: Any) -> bool:
    value = getattr(pending, "value", None)
    return isinstance(value, dict) and isinstance(value.get(INTERRUPT_KEY), dict)


def _external_id(thread_id: str, interrupt_id: str) -> str:
    raw = f"langgraph:{thread_id}:{interrupt_id}"
    if len(raw) <= 200:
        return raw
    return "langgraph:" + hashlib.sha256(raw.encode()).hexdigest()


def _as_decision(exc: NotApproved) -> Decision:
    if exc.decision is not None:
        return exc.decision
    return Decision(escalation_id=exc.escalation.id, outcome="pending", comment=exc.reason)


def _request_kwargs(pending: Any, thread_id: str) -> dict[str, Any]:
    request = dict(pending.value[INTERRUPT_KEY])
    request.pop("kind", None)
    request["external_id"] = _external_id(thread_id, pending.id)
    return request


def _thread_id(config: dict[str, Any]) -> str:
    return str((config.get("configurable") or {}).get("thread_id", "default"))


def resume_command(
    client: AwaitHuman, interrupts: Iterable[Any], *, thread_id: str = "default"
) -> Any:
    """Ask a human about each pending AwaitHuman interrupt, block until all are decided, and
    return the ``Command(resume={interrupt_id: decision})`` that continues the graph (None when
    none of the interrupts is ours)."""
    from langgraph.types import Command

    resume: dict[str, Any] = {}
    for pending in interrupts:
        if not _ours(pending):
            continue
        try:
            decision = client.request_approval(**_request_kwargs(pending, thread_id))
        except NotApproved as exc:
            decision = _as_decision(exc)
        resume[pending.id] = decision.as_dict()
    return Command(resume=resume) if resume else None


async def aresume_command(
    client: AsyncAwaitHuman, interrupts: Iterable[Any], *, thread_id: str = "default"
) -> Any:
    from langgraph.types import Command

    resume: dict[str, Any] = {}
    for pending in interrupts:
        if not _ours(pending):
            continue
        try:
            decision = await client.request_approval(**_request_kwargs(pending, thread_id))
        except NotApproved as exc:
            decision = _as_decision(exc)
        resume[pending.id] = decision.as_dict()
    return Command(resume=resume) if resume else None


def run_with_approvals(
    graph: Any, graph_input: Any, config: dict[str, Any], client: AwaitHuman
) -> Any:
    """``graph.invoke`` until no AwaitHuman interrupt is pending (the graph needs a
    checkpointer and ``config`` a ``thread_id``); returns the last result. Pass
    ``graph_input=None`` to pick up a thread that was interrupted before a restart."""
    thread_id = _thread_id(config)
    result = graph.invoke(graph_input, config) if graph_input is not None else None
    while True:
        command = resume_command(client, graph.get_state(config).interrupts, thread_id=thread_id)
        if command is None:
            return result
        result = graph.invoke(command, config)


async def arun_with_approvals(
    graph: Any, graph_input: Any, config: dict[str, Any], client: AsyncAwaitHuman
) -> Any:
    thread_id = _thread_id(config)
    result = await graph.ainvoke(graph_input, config) if graph_input is not None else None
    while True:
        state = await graph.aget_state(config)
        command = await aresume_command(client, state.interrupts, thread_id=thread_id)
        if command is None:
            return result
        result = await graph.ainvoke(command, config)
