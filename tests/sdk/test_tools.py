"""``@require_approval`` and ``ApprovalGate``: tool functions behind a human, on a live server."""

from __future__ import annotations

import pytest
from awaithuman_sdk import ApprovalGate, AsyncAwaitHuman, AwaitHuman, Rejected, require_approval

from tests.sdk.conftest import Background


def refunds(live, run_id: str):
    client = AwaitHuman(api_key=live.agent_key, base_url=live.base)
    ran: list[dict] = []

    @require_approval(
        client,
        when=lambda arguments: arguments["amount"] > 500,
        title=lambda arguments: f"Refund ${arguments['amount']} on order {arguments['order']}",
        context=lambda arguments: {"reasoning": "double charge", "run": run_id},
        wait_timeout=60,
    )
    def issue_refund(order: int, amount: int, currency: str = "USD") -> str:
        ran.append({"order": order, "amount": amount, "currency": currency})
        return f"refunded {amount} {currency} on {order}"

    return issue_refund, ran


def test_a_call_below_the_condition_runs_without_asking(live, run_id):
    issue_refund, ran = refunds(live, run_id)
    assert issue_refund(7, 20) == "refunded 20 USD on 7"
    assert ran == [{"order": 7, "amount": 20, "currency": "USD"}]


def test_an_approved_call_runs_with_the_humans_edits(live, operator, run_id):
    issue_refund, ran = refunds(live, run_id)

    def human() -> None:
        escalation = operator.pending(run=run_id)
        assert escalation["title"] == "Refund $750 on order 1042"
        assert escalation["action"] == {
            "name": "issue_refund",
            "arguments": {"order": 1042, "amount": 750, "currency": "USD"},
        }
        operator.approve(
            escalation["id"], edited_arguments={"order": 1042, "amount": 700, "currency": "USD"}
        )

    Background(human)
    assert issue_refund(1042, amount=750) == "refunded 700 USD on 1042"
    assert ran == [{"order": 1042, "amount": 700, "currency": "USD"}]


def test_a_rejected_call_returns_the_reason_for_the_model(live, operator, run_id):
    issue_refund, ran = refunds(live, run_id)
    Background(
        lambda: operator.answer(
            operator.pending(run=run_id)["id"], outcome="reject", comment="Fraud risk."
        )
    )
    result = issue_refund(1042, 750)
    assert ran == []
    assert "issue_refund" in result and "Fraud risk." in result


def test_on_reject_raise_raises(live, operator, run_id):
    client = AwaitHuman(api_key=live.agent_key, base_url=live.base)

    @require_approval(client, on_reject="raise", context={"run": run_id})
    def delete_customer(customer_id: int) -> None:
        raise AssertionError("must not run")

    Background(
        lambda: operator.answer(operator.pending(run=run_id)["id"], outcome="reject", comment="No.")
    )
    with pytest.raises(Rejected, match=r"No\."):
        delete_customer(7)


async def test_an_async_tool_with_the_async_client(live, operator, run_id):
    client = AsyncAwaitHuman(api_key=live.agent_key, base_url=live.base)

    @require_approval(client, context={"run": run_id})
    async def send_email(to: str, subject: str) -> str:
        return f"sent to {to}"

    Background(lambda: operator.approve(operator.pending(run=run_id)["id"]))
    assert await send_email("ceo@acme.test", subject="Hi") == "sent to ceo@acme.test"


def test_the_gate_reports_unknown_tools_and_skips_unlisted_ones(live):
    client = AwaitHuman(api_key=live.agent_key, base_url=live.base)
    gate = ApprovalGate(client, [lambda: "x"], require=["issue_refund"])
    assert gate.run("nope", {}).output == "Error: there is no tool named `nope`."
    free = ApprovalGate(client, {"lookup": lambda order: {"order": order}}, require=["refund"])
    run = free.run("lookup", {"order": 1})
    assert (run.approved, run.output) == (None, '{"order": 1}')
