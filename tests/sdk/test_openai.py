"""The OpenAI adapter on real ``openai`` response objects (built locally, no API calls), with
approvals answered on the live server."""

from __future__ import annotations

import json

from awaithuman_sdk import ApprovalGate, AsyncAwaitHuman, AwaitHuman
from awaithuman_sdk.openai import (
    arun_response_function_calls,
    run_chat_tool_calls,
    run_response_function_calls,
)
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from tests.sdk.conftest import Background


def lookup_order(order: int) -> dict:
    return {"order": order, "charged": [750, 750]}


def issue_refund(order: int, amount: int) -> str:
    return f"Refunded ${amount} on order {order}."


def chat_completion(run_id: str) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1_750_000_000,
            "model": "gpt-test",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": {
                        "role": "assistant",
                        "content": f"The customer was charged twice ({run_id}).",
                        "tool_calls": [
                            {
                                "id": "call_lookup",
                                "type": "function",
                                "function": {
                                    "name": "lookup_order",
                                    "arguments": '{"order": 1042}',
                                },
                            },
                            {
                                "id": "call_refund",
                                "type": "function",
                                "function": {
                                    "name": "issue_refund",
                                    "arguments": json.dumps({"order": 1042, "amount": 750}),
                                },
                            },
                        ],
                    },
                }
            ],
        }
    )


def responses_response(run_id: str) -> Response:
    return Response.model_validate(
        {
            "id": "resp_1",
            "object": "response",
            "created_at": 1_750_000_000,
            "model": "gpt-test",
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "output": [
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": f"Refund it ({run_id}).", "annotations": []}
                    ],
                },
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_refund",
                    "name": "issue_refund",
                    "arguments": json.dumps({"order": 1042, "amount": 750}),
                    "status": "completed",
                },
            ],
        }
    )


def find_by_reasoning(operator, run_id: str) -> dict:
    return operator.pending(
        match=lambda escalation: run_id in escalation["context"].get("reasoning", "")
    )


def gate_for(live, client_cls=AwaitHuman) -> ApprovalGate:
    client = client_cls(api_key=live.agent_key, base_url=live.base)
    tools = {"lookup_order": lookup_order, "issue_refund": issue_refund}
    return ApprovalGate(client, tools, require=["issue_refund"], wait_timeout=60)


def test_chat_tool_calls_go_through_approval(live, operator, run_id):
    completion = chat_completion(run_id)
    history = [{"role": "user", "content": "I was charged twice for order 1042!"}]

    def human() -> None:
        escalation = find_by_reasoning(operator, run_id)
        assert escalation["action"] == {
            "name": "issue_refund",
            "arguments": {"order": 1042, "amount": 750},
        }
        assert [call["name"] for call in escalation["context"]["tool_calls"]] == [
            "lookup_order",
            "issue_refund",
        ]
        assert escalation["context"]["messages"] == history
        operator.approve(escalation["id"], comment="Confirmed in Stripe.")

    Background(human)
    replies = run_chat_tool_calls(gate_for(live), completion.choices[0].message, messages=history)

    assert [reply["tool_call_id"] for reply in replies] == ["call_lookup", "call_refund"]
    assert all(reply["role"] == "tool" for reply in replies)
    assert json.loads(replies[0]["content"]) == {"order": 1042, "charged": [750, 750]}
    assert "Confirmed in Stripe." in replies[1]["content"]
    assert "Refunded $750 on order 1042." in replies[1]["content"]


def test_a_rejected_chat_tool_call_tells_the_model_why(live, operator, run_id):
    Background(
        lambda: operator.answer(
            find_by_reasoning(operator, run_id)["id"],
            outcome="reject",
            comment="Offer store credit instead.",
        )
    )
    replies = run_chat_tool_calls(gate_for(live), chat_completion(run_id).choices[0].message)
    assert "not approved" in replies[1]["content"]
    assert "Offer store credit instead." in replies[1]["content"]
    assert "Refunded" not in replies[1]["content"]


def test_responses_function_calls_go_through_approval(live, operator, run_id):
    Background(
        lambda: operator.approve(
            find_by_reasoning(operator, run_id)["id"],
            edited_arguments={"order": 1042, "amount": 700},
        )
    )
    items = run_response_function_calls(gate_for(live), responses_response(run_id))
    (item,) = items
    assert item["type"] == "function_call_output"
    assert item["call_id"] == "call_refund"
    assert "Refunded $700 on order 1042." in item["output"]
    assert "edited arguments" in item["output"]


async def test_responses_function_calls_with_the_async_client(live, operator, run_id):
    Background(lambda: operator.approve(find_by_reasoning(operator, run_id)["id"]))
    gate = gate_for(live, AsyncAwaitHuman)
    (item,) = await arun_response_function_calls(gate, responses_response(run_id))
    assert item["output"] == "Refunded $750 on order 1042."


def test_malformed_arguments_are_sent_back_to_the_model(live):
    message = chat_completion("x").choices[0].message.model_copy(deep=True)
    message.tool_calls[1].function.arguments = "{not json"
    message.tool_calls = message.tool_calls[1:]
    (reply,) = run_chat_tool_calls(gate_for(live), message)
    assert reply["content"].startswith("Error: the arguments are not valid JSON")
