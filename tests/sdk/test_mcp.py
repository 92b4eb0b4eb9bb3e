"""``awaithuman-mcp`` driven by the ``mcp`` package's own stdio client, against the live server.

The acceptance: an approval that takes a human minutes completes without any single MCP call
running past the client's 60-second request limit (``read_timeout_seconds=60`` makes the client
enforce it). The quick variant shrinks the per-call budget to 3 s and the human's delay to 8 s;
the honest variant keeps the default 50 s budget and a 2-minute human.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.sdk.conftest import Background

MCP_LIMIT = 60.0
SERVER = str(Path(sys.executable).parent / "awaithuman-mcp")


def result_of(call: Any) -> dict[str, Any]:
    assert not call.is_error, call.content
    if call.structured_content:
        return call.structured_content.get("result", call.structured_content)
    return json.loads(call.content[0].text)


async def approve_through_mcp(live, operator, run_id: str, *, budget: str | None, delay: float):
    env = live.env()
    if budget is not None:
        env["AWAITHUMAN_MCP_WAIT_SECONDS"] = budget
    params = StdioServerParameters(command=SERVER, env=env)

    def human() -> float:
        escalation = operator.pending(external_id=run_id)
        time.sleep(delay)
        operator.approve(escalation["id"], comment="Go ahead.")
        return time.monotonic()

    durations: list[float] = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = {tool.name for tool in (await session.list_tools()).tools}
        assert {"request_approval", "ask_human", "check_escalation"} <= tools

        approving = Background(human)
        started = time.monotonic()
        call = await session.call_tool(
            "request_approval",
            {
                "action_name": "issue_refund",
                "arguments": {"order": 1042, "amount": 750},
                "title": "Refund $750 to order #1042",
                "reasoning": "Charged twice.",
                "external_id": run_id,
            },
            read_timeout_seconds=MCP_LIMIT,
        )
        durations.append(time.monotonic() - started)
        result = result_of(call)
        while result["status"] == "pending":
            assert "check_escalation" in result["message"]
            started = time.monotonic()
            call = await session.call_tool(
                "check_escalation",
                {"escalation_id": result["escalation_id"]},
                read_timeout_seconds=MCP_LIMIT,
            )
            durations.append(time.monotonic() - started)
            result = result_of(call)
        decided_at = time.monotonic()
        approved_at = approving.result(timeout=delay + 60)
    return result, durations, decided_at - approved_at


async def test_a_slow_approval_completes_in_short_calls(live, operator, run_id):
    result, durations, lag = await approve_through_mcp(live, operator, run_id, budget="3", delay=8)
    assert result["status"] == "approved"
    assert result["approved"] is True
    assert result["arguments"] == {"order": 1042, "amount": 750}
    assert result["receipt"].count(".") == 2
    assert "Go ahead." in result["message"]
    assert len(durations) >= 3
    assert max(durations) < 3 + 5
    assert lag < 2  # the pending call in flight returned as soon as the human decided


@pytest.mark.slow
async def test_a_two_minute_approval_never_exceeds_the_mcp_limit(live, operator, run_id):
    result, durations, lag = await approve_through_mcp(
        live, operator, run_id, budget=None, delay=120
    )
    assert result["status"] == "approved"
    assert sum(durations) >= 120
    assert len(durations) >= 3
    assert max(durations) < MCP_LIMIT - 5
    assert lag < 2


async def test_ask_human_and_a_rejection_over_mcp(live, operator, run_id):
    params = StdioServerParameters(command=SERVER, env=live.env(AWAITHUMAN_MCP_WAIT_SECONDS="20"))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        Background(
            lambda: operator.answer(
                operator.pending(external_id=f"{run_id}-q")["id"],
                outcome="answer",
                response={"answer": "Blue."},
            )
        )
        answer = result_of(
            await session.call_tool(
                "ask_human",
                {"question": "Which colour?", "external_id": f"{run_id}-q"},
                read_timeout_seconds=MCP_LIMIT,
            )
        )
        assert answer["status"] == "answered"
        assert answer["answer"] == {"answer": "Blue."}

        Background(
            lambda: operator.answer(
                operator.pending(external_id=f"{run_id}-r")["id"],
                outcome="reject",
                comment="Not today.",
            )
        )
        rejected = result_of(
            await session.call_tool(
                "request_approval",
                {
                    "action_name": "delete_customer",
                    "arguments": {"id": 7},
                    "external_id": f"{run_id}-r",
                },
                read_timeout_seconds=MCP_LIMIT,
            )
        )
        assert rejected["status"] == "rejected"
        assert rejected["approved"] is False
        assert "Do not proceed" in rejected["message"]
        assert "Not today." in rejected["message"]


async def test_a_refused_call_returns_the_reason_as_the_tools_error_result(live, run_id):
    """Not "Error executing tool …" with the reason on stderr: the model reads why."""
    bad_key = "ahk_live_AAAAAAAAAAAA_" + "A" * 38
    for env, arguments, expected in [
        (
            live.env(),
            {"action_name": "issue_refund", "timeout_seconds": -5, "external_id": run_id},
            "AwaitHuman refused the request",
        ),
        (live.env(AWAITHUMAN_API_KEY=bad_key), {"action_name": "issue_refund"}, "AwaitHuman: 401"),
    ]:
        params = StdioServerParameters(command=SERVER, env=env)
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            call = await session.call_tool(
                "request_approval", arguments, read_timeout_seconds=MCP_LIMIT
            )
        assert call.is_error
        text = call.content[0].text
        assert expected in text, text
