"""The Anthropic adapter on real ``anthropic`` Message objects (built locally, no API calls)."""

from __future__ import annotations

from anthropic.types import Message
from awaithuman_sdk import ApprovalGate, AsyncAwaitHuman, AwaitHuman
from awaithuman_sdk.anthropic import arun_tool_uses, run_tool_uses

from tests.sdk.conftest import Background
from tests.sdk.test_openai import find_by_reasoning, issue_refund, lookup_order


def message(run_id: str) -> Message:
    return Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 20},
            "content": [
                {"type": "text", "text": f"Charged twice; refunding ({run_id})."},
                {
                    "type": "tool_use",
                    "id": "toolu_lookup",
                    "name": "lookup_order",
                    "input": {"order": 1042},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_refund",
                    "name": "issue_refund",
                    "input": {"order": 1042, "amount": 750},
                },
            ],
        }
    )


def gate_for(live, client_cls=AwaitHuman) -> ApprovalGate:
    client = client_cls(api_key=live.agent_key, base_url=live.base)
    tools = {"lookup_order": lookup_order, "issue_refund": issue_refund}
    return ApprovalGate(
        client, tools, require=lambda name, args: args.get("amount", 0) > 500, wait_timeout=60
    )


def test_tool_use_blocks_become_tool_results_after_approval(live, operator, run_id):
    def human() -> None:
        escalation = find_by_reasoning(operator, run_id)
        assert escalation["action"]["arguments"] == {"order": 1042, "amount": 750}
        assert escalation["context"]["tool_calls"][1]["id"] == "toolu_refund"
        operator.approve(escalation["id"])

    Background(human)
    reply = run_tool_uses(gate_for(live), message(run_id))

    assert reply["role"] == "user"
    lookup, refund = reply["content"]
    assert lookup["type"] == refund["type"] == "tool_result"
    assert (lookup["tool_use_id"], refund["tool_use_id"]) == ("toolu_lookup", "toolu_refund")
    assert refund["content"] == "Refunded $750 on order 1042."
    assert "is_error" not in refund


def test_a_rejected_tool_use_is_an_error_result_with_the_reason(live, operator, run_id):
    Background(
        lambda: operator.answer(
            find_by_reasoning(operator, run_id)["id"], outcome="reject", comment="Too much."
        )
    )
    _, refund = run_tool_uses(gate_for(live), message(run_id))["content"]
    assert refund["is_error"] is True
    assert "Too much." in refund["content"]


async def test_the_async_variant(live, operator, run_id):
    Background(lambda: operator.approve(find_by_reasoning(operator, run_id)["id"]))
    reply = await arun_tool_uses(gate_for(live, AsyncAwaitHuman), message(run_id))
    assert reply["content"][1]["content"] == "Refunded $750 on order 1042."
