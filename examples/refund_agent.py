"""A customer-support agent that refunds a double charge, but asks a human first.

No LLM key needed: a scripted, deterministic "model" stands in for one, and the loop around it
is the same one a real agent runs (see refund_agent_llm.py for OpenAI / Anthropic). With
`make run` going in another terminal:

    .venv/bin/python examples/refund_agent.py            # then approve it in the console

The agent looks the order up (no approval needed), proposes a $750 refund, and blocks on the
long-poll until a human decides. On approval it verifies the decision receipt against the exact
refund it is about to make, and only then "executes" it, with the human's edits if any.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from _credentials import agent_credentials
from awaithuman_sdk import AwaitHuman, NotApproved, ReceiptError

APPROVAL_THRESHOLD = 500


# --- The tools ---------------------------------------------------------------------------------


def lookup_order(order: int) -> dict[str, Any]:
    return {"order": order, "customer": "Dana Scully", "charges": [750, 750], "currency": "USD"}


def issue_refund(order: int, amount: int) -> str:
    return f"Refunded ${amount} on order #{order} (refund id re_{order}_{amount})."


# --- A scripted stand-in for a model -------------------------------------------------------------


def scripted_model(messages: list[dict[str, Any]], *, amount: int) -> dict[str, Any]:
    """The next assistant turn, in the shape of an OpenAI chat message, decided from the
    conversation so far the way a model would: look up, propose the refund, report."""
    tool_results = [message for message in messages if message["role"] == "tool"]
    order = int("".join(ch for ch in messages[0]["content"] if ch.isdigit()))
    if not tool_results:
        call = {"id": "call_1", "name": "lookup_order", "arguments": {"order": order}}
        return {"role": "assistant", "content": "Let me look at the order.", "tool_calls": [call]}
    if len(tool_results) == 1:
        charges = json.loads(tool_results[0]["content"])["charges"]
        call = {
            "id": "call_2",
            "name": "issue_refund",
            "arguments": {"order": order, "amount": amount},
        }
        return {
            "role": "assistant",
            "content": (
                f"Order #{order} shows the charge {charges[0]} twice; policy allows refunding a "
                f"duplicate charge, so I will refund ${amount}."
            ),
            "tool_calls": [call],
        }
    return {"role": "assistant", "content": tool_results[-1]["content"], "tool_calls": []}


# --- The agent loop ----------------------------------------------------------------------------


def run_tool(
    client: AwaitHuman, call: dict[str, Any], messages: list[dict[str, Any]], run_id: str
) -> str:
    name, arguments = call["name"], call["arguments"]
    if name == "lookup_order":
        return json.dumps(lookup_order(**arguments))
    if name != "issue_refund":
        return f"Error: no tool {name}"
    if arguments["amount"] <= APPROVAL_THRESHOLD:
        return issue_refund(**arguments)

    action = {"name": name, "arguments": arguments}
    print(f"→ asking a human to approve {name}({arguments}) …", flush=True)
    print(f"  (approve it in the console's queue at {client.base_url}/; the agent waits)")
    try:
        decision = client.request_approval(
            action,
            title=f"Refund ${arguments['amount']} to order #{arguments['order']}",
            context={
                "reasoning": messages[-1]["content"],
                "messages": messages,
                "tool_calls": [call],
            },
            # One logical request per order: a restarted agent picks the same escalation up.
            external_id=run_id,
            verify_receipt=False,  # verified explicitly below, to show it
        )
    except NotApproved as refused:
        print(f"✗ not approved: {refused.reason}")
        return f"Not done: a human did not approve the refund. {refused.reason}"

    # The executor's check: the receipt must be a valid signature, by a published key, over
    # exactly the action about to run (with the human's edits), and not expired.
    try:
        claims = client.verify_receipt(decision, action=decision.action)
    except ReceiptError as bad:
        print(f"✗ receipt refused: {bad}")
        return "Not done: the approval's receipt did not verify."
    print(
        f"✓ approved by {decision.decided_by.get('email') or decision.decided_by.get('type')}; "
        f"receipt verified (escalation {claims['sub']}, action_hash {claims['action_hash'][:12]}…)"
    )
    if decision.edited:
        print(f"  the human edited the arguments: {decision.arguments}")
    return issue_refund(**decision.arguments)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--order", type=int, default=1042)
    parser.add_argument("--amount", type=int, default=750)
    parser.add_argument("--run-id", default=None, help="external_id (default: refund-<order>)")
    args = parser.parse_args(argv)
    api_key, base_url = agent_credentials()
    run_id = args.run_id or f"refund-{args.order}"

    messages: list[dict[str, Any]] = [
        {"role": "user", "content": f"I was charged twice for order #{args.order}!"}
    ]
    print(f"customer: {messages[0]['content']}")
    with AwaitHuman(api_key=api_key, base_url=base_url) as client:
        while True:
            turn = scripted_model(messages, amount=args.amount)
            messages.append(turn)
            print(f"agent:    {turn['content']}")
            if not turn["tool_calls"]:
                break
            for call in turn["tool_calls"]:
                output = run_tool(client, call, messages, run_id)
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": output})
    return 0 if messages[-1]["content"].startswith("Refunded") else 1


if __name__ == "__main__":
    sys.exit(main())
