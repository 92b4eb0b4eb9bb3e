"""``awaithuman-mcp``: an MCP server (stdio) that lets any MCP client ask a human.

Tools:

* ``request_approval(action_name, arguments, title?, reasoning?, …)``: ask a human to approve an
  action; returns the decision (approved / rejected, the comment, edited arguments, the receipt).
* ``ask_human(question, reasoning?, …)``: ask a question; returns the answer.
* ``check_escalation(escalation_id)``: keep waiting on an earlier request.

MCP clients give up on a request after about 60 s, and humans take longer. So each call waits at
most ``AWAITHUMAN_MCP_WAIT_SECONDS`` (default 50) and then answers "still pending, call
check_escalation with escalation_id=…"; the model calls again, as often as it takes, and no call
ever trips the client's timeout.

Configuration (environment): ``AWAITHUMAN_API_KEY`` (an agent key, required),
``AWAITHUMAN_BASE_URL`` (default ``http://127.0.0.1:8000``), ``AWAITHUMAN_MCP_WAIT_SECONDS``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from .client import AsyncAwaitHuman
from .errors import APIError, AwaitHumanError, MissingDependency, ValidationError
from .models import Escalation

try:
    from mcp.server import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
except ImportError:  # mcp 1.x, or no mcp at all
    try:
        # mcp 1.x's names: the type check runs against the mcp 2.x installed, which has neither.
        from mcp.server.fastmcp import FastMCP as MCPServer  # type: ignore[attr-defined, no-redef]
        from mcp.server.fastmcp.exceptions import (  # type: ignore[import-not-found, no-redef]
            ToolError,
        )
    except ImportError as exc:
        raise MissingDependency(
            "awaithuman-mcp needs the 'mcp' package: pip install 'awaithuman-sdk[mcp]'"
        ) from exc

DEFAULT_WAIT_SECONDS = 50.0
INSTRUCTIONS = (
    "Use request_approval before any consequential or irreversible action (payments, refunds, "
    "deleting data, messages to customers) and ask_human when you need information or a "
    "judgement only a person has. A human may take minutes: when a result says the request is "
    "pending, call check_escalation with its escalation_id until it is decided. Only proceed when "
    "the result says approved, and then with the arguments it gives."
)


def wait_budget() -> float:
    raw = os.environ.get("AWAITHUMAN_MCP_WAIT_SECONDS", "")
    budget = float(raw) if raw.strip() else DEFAULT_WAIT_SECONDS
    return min(max(budget, 0.0), 55.0)


def describe(escalation: Escalation, budget: float) -> dict[str, Any]:
    """The tool result: the decision, or where to keep waiting."""
    decision = escalation.decision
    if decision is None:
        return {
            "status": "pending",
            "escalation_id": escalation.id,
            "message": (
                f"Still waiting for a human. Call check_escalation with "
                f'escalation_id="{escalation.id}" to keep waiting (each call waits up to '
                f"{budget:.0f} s). Do not proceed until it is approved."
            ),
        }
    result: dict[str, Any] = {
        "status": decision.outcome,
        "escalation_id": escalation.id,
        "approved": decision.approved,
        "comment": decision.comment,
        "decided_by": decision.decided_by,
    }
    if escalation.kind == "question":
        result["answer"] = decision.response
        if decision.outcome == "answered":
            result["message"] = "A human answered."
        else:
            result["message"] = f"No answer: {decision.reason}"
        return result
    if decision.approved:
        result["arguments"] = decision.arguments
        result["edited_arguments"] = decision.edited_arguments
        result["receipt"] = decision.receipt
        edits = " with edited arguments" if decision.edited else ""
        result["message"] = (
            f"{decision.reason} Proceed{edits}, using exactly these arguments: "
            f"{decision.arguments}."
        )
    else:
        result["message"] = f"{decision.reason} Do not proceed with this action."
    return result


class _Tools:
    """The three tools over one AsyncAwaitHuman client (made on first use, from the env)."""

    def __init__(self, client: AsyncAwaitHuman | None = None, budget: float | None = None):
        self._client = client
        self.budget = wait_budget() if budget is None else budget

    @property
    def client(self) -> AsyncAwaitHuman:
        if self._client is None:
            self._client = AsyncAwaitHuman()
        return self._client

    async def _settle(self, escalation: Escalation, started: float) -> dict[str, Any]:
        if not escalation.is_terminal:
            remaining = max(0.0, self.budget - (time.monotonic() - started))
            escalation = await self.client.wait(escalation.id, timeout=remaining)
        return describe(escalation, self.budget)

    async def _create(self, body: dict[str, Any]) -> Escalation:
        external_id = body.get("external_id")
        if external_id:
            earlier = await self.client.find(external_id)
            if earlier is not None and earlier.status != "cancelled":
                return earlier
        try:
            return await self.client.create(**body)
        except ValidationError as exc:
            fields = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in exc.errors.items())
            raise ToolError(f"AwaitHuman refused the request: {exc.detail} {fields}") from exc

    async def request_approval(
        self,
        action_name: str,
        arguments: dict[str, Any] | None = None,
        title: str | None = None,
        reasoning: str = "",
        timeout_seconds: int | None = None,
        external_id: str | None = None,
    ) -> dict[str, Any]:
        started = time.monotonic()
        action = {"name": action_name, "arguments": arguments or {}}
        body: dict[str, Any] = {
            "kind": "approval",
            "title": title or f"Approve {action_name}",
            "action": action,
            "context": {"reasoning": reasoning},
            "timeout": timeout_seconds,
            "external_id": external_id,
        }
        return await self._settle(await self._create(body), started)

    async def ask_human(
        self,
        question: str,
        reasoning: str = "",
        timeout_seconds: int | None = None,
        external_id: str | None = None,
    ) -> dict[str, Any]:
        started = time.monotonic()
        context: dict[str, Any] = {"reasoning": reasoning}
        if len(question) > 300:
            context["question"] = question
        body: dict[str, Any] = {
            "kind": "question",
            "title": question if len(question) <= 300 else question[:299] + "…",
            "context": context,
            "timeout": timeout_seconds,
            "external_id": external_id,
        }
        return await self._settle(await self._create(body), started)

    async def check_escalation(self, escalation_id: str) -> dict[str, Any]:
        started = time.monotonic()
        try:
            escalation = await self.client.get(escalation_id)
        except APIError as exc:
            raise ToolError(f"Cannot read {escalation_id}: {exc.detail}") from exc
        return await self._settle(escalation, started)


@contextlib.asynccontextmanager
async def _as_tool_error() -> AsyncIterator[None]:
    """Any SDK error (a bad key, a refused request, the server unreachable) becomes the tool's
    error result with its message, for the model to read; the MCP SDK would otherwise treat it
    as a crash and show only "Error executing tool …"."""
    try:
        yield
    except ToolError:
        raise
    except AwaitHumanError as exc:
        raise ToolError(f"AwaitHuman: {exc}") from exc


def build_server(
    client: AsyncAwaitHuman | None = None, *, budget: float | None = None
) -> MCPServer:
    tools = _Tools(client, budget)
    server = MCPServer("awaithuman", instructions=INSTRUCTIONS)

    @server.tool()
    async def request_approval(
        action_name: str,
        arguments: dict[str, Any] | None = None,
        title: str | None = None,
        reasoning: str = "",
        timeout_seconds: int | None = None,
        external_id: str | None = None,
    ) -> dict[str, Any]:
        """Ask a human to approve an action before you take it, and wait for the decision.

        action_name and arguments: exactly what you are about to do (e.g. "issue_refund",
        {"order": 1042, "amount": 750}). title: one line for the human. reasoning: why.
        timeout_seconds: the human's deadline. external_id: your own id for this request;
        calling again with it never asks twice. Returns the decision, or "pending" with an
        escalation_id to pass to check_escalation. Proceed only when approved, with the
        arguments returned (the human may have edited them).
        """
        async with _as_tool_error():
            return await tools.request_approval(
                action_name, arguments, title, reasoning, timeout_seconds, external_id
            )

    @server.tool()
    async def ask_human(
        question: str,
        reasoning: str = "",
        timeout_seconds: int | None = None,
        external_id: str | None = None,
    ) -> dict[str, Any]:
        """Ask a human a question and wait for the answer (or "pending" with an escalation_id
        to pass to check_escalation)."""
        async with _as_tool_error():
            return await tools.ask_human(question, reasoning, timeout_seconds, external_id)

    @server.tool()
    async def check_escalation(escalation_id: str) -> dict[str, Any]:
        """Keep waiting for the decision on an earlier request_approval or ask_human; returns
        the decision, or "pending" again (then call this again)."""
        async with _as_tool_error():
            return await tools.check_escalation(escalation_id)

    return server


def main() -> None:
    build_server().run()


if __name__ == "__main__":
    main()
