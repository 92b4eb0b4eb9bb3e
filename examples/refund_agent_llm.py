"""The refund agent with a real model: OpenAI if OPENAI_API_KEY is set, else Anthropic if
ANTHROPIC_API_KEY is set (``pip install 'awaithuman-sdk[openai]'`` / ``[anthropic]``).

    OPENAI_API_KEY=… .venv/bin/python examples/refund_agent_llm.py
    ANTHROPIC_API_KEY=… .venv/bin/python examples/refund_agent_llm.py

The model decides what to call; every ``issue_refund`` over $500 goes through AwaitHuman via the
adapter (the receipt is verified against the exact call before it runs), and a rejection is
handed back to the model as the tool result, with the human's reason, so it can adapt.
Models: OPENAI_MODEL (default gpt-4.1-mini) or ANTHROPIC_MODEL (default claude-sonnet-4-5).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from _credentials import agent_credentials
from awaithuman_sdk import ApprovalGate, AwaitHuman
from refund_agent import APPROVAL_THRESHOLD, issue_refund, lookup_order

SYSTEM = (
    "You are a support agent. Look orders up before acting. Refund duplicate charges. "
    "If a tool result says a human did not approve something, explain that to the customer."
)
QUESTION = "I was charged twice for order #1042!"
PARAMETERS = {
    "lookup_order": {
        "type": "object",
        "properties": {"order": {"type": "integer"}},
        "required": ["order"],
    },
    "issue_refund": {
        "type": "object",
        "properties": {"order": {"type": "integer"}, "amount": {"type": "integer"}},
        "required": ["order", "amount"],
    },
}
DESCRIPTIONS = {
    "lookup_order": "Look up an order's customer and charges.",
    "issue_refund": "Refund an amount in dollars on an order.",
}


def gate(client: AwaitHuman) -> ApprovalGate:
    return ApprovalGate(
        client,
        {"lookup_order": lookup_order, "issue_refund": issue_refund},
        require=lambda name, args: (
            name == "issue_refund" and args.get("amount", 0) > APPROVAL_THRESHOLD
        ),
        title=lambda name, args: f"Refund ${args['amount']} to order #{args['order']}",
        verify_receipt=True,
    )


def with_openai(client: AwaitHuman) -> str:
    from awaithuman_sdk.openai import run_chat_tool_calls
    from openai import OpenAI

    model = os.environ.get("OPENAI_MODEL", "gpt-4.1-mini")
    tools = [
        {
            "type": "function",
            "function": {"name": name, "description": DESCRIPTIONS[name], "parameters": schema},
        }
        for name, schema in PARAMETERS.items()
    ]
    messages: list[Any] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
    ]
    openai = OpenAI()
    for _ in range(8):
        message = openai.chat.completions.create(model=model, messages=messages, tools=tools)
        message = message.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return message.content or ""
        messages += run_chat_tool_calls(gate(client), message, messages=messages[1:])
    return "(gave up after 8 turns)"


def with_anthropic(client: AwaitHuman) -> str:
    from anthropic import Anthropic
    from awaithuman_sdk.anthropic import run_tool_uses

    model = os.environ.get("ANTHROPIC_MODEL", "claude-sonnet-4-5")
    tools = [
        {"name": name, "description": DESCRIPTIONS[name], "input_schema": schema}
        for name, schema in PARAMETERS.items()
    ]
    messages: list[Any] = [{"role": "user", "content": QUESTION}]
    anthropic = Anthropic()
    for _ in range(8):
        message = anthropic.messages.create(
            model=model, max_tokens=1024, system=SYSTEM, tools=tools, messages=messages
        )
        messages.append({"role": "assistant", "content": message.content})
        if message.stop_reason != "tool_use":
            return "".join(block.text for block in message.content if block.type == "text")
        messages.append(run_tool_uses(gate(client), message, messages=messages))
    return "(gave up after 8 turns)"


def main() -> int:
    if os.environ.get("OPENAI_API_KEY"):
        run = with_openai
    elif os.environ.get("ANTHROPIC_API_KEY"):
        run = with_anthropic
    else:
        print("Set OPENAI_API_KEY or ANTHROPIC_API_KEY (or run refund_agent.py: no key needed).")
        return 2
    api_key, base_url = agent_credentials()
    with AwaitHuman(api_key=api_key, base_url=base_url) as client:
        print(f"customer: {QUESTION}")
        print("(a refund over $500 waits for a human: approve it in the console)")
        print(f"agent:    {run(client)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
