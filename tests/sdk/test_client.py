"""The blocking and async clients against a live server: ask, wait, get the decision. Every test
runs with both (the ``clients`` fixture)."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest
from awaithuman_sdk import (
    AuthError,
    Cancelled,
    ReceiptError,
    Rejected,
    TimedOut,
    ValidationError,
    action_hash,
    verify_receipt,
)
from pydantic import BaseModel

from tests.sdk.conftest import REFUND, Background


def test_a_decision_taken_mid_long_poll_returns_at_once(clients, operator, run_id):
    paths: list[str] = []
    client = clients.new(on_request=lambda request: paths.append(request.url.path))

    def human() -> float:
        escalation = operator.pending(external_id=run_id)
        time.sleep(1.0)  # the SDK is parked in its long-poll by now
        operator.approve(escalation["id"], comment="Double charge confirmed.")
        return time.monotonic()

    approving = Background(human)
    decision = client.request_approval(REFUND, external_id=run_id)
    returned = time.monotonic()
    approved_at = approving.result()

    assert decision.approved
    assert decision.comment == "Double charge confirmed."
    assert decision.decided_by["type"] == "user"
    assert decision.arguments == REFUND["arguments"]
    assert returned - approved_at < 1.0
    assert sum(path.endswith("/wait") for path in paths) == 1  # one poll, woken by the decision


def test_a_rejection_raises_with_the_humans_reason(clients, operator, run_id):
    client = clients.new()
    Background(
        lambda: operator.answer(
            operator.pending(external_id=run_id)["id"],
            outcome="reject",
            comment="Refunds over $500 need a manager.",
        )
    )
    with pytest.raises(Rejected) as caught:
        client.request_approval(REFUND, external_id=run_id)
    assert "Refunds over $500 need a manager." in caught.value.reason
    assert caught.value.decision.outcome == "rejected"


def test_approve_with_edits_returns_the_edited_action_with_a_matching_receipt(
    clients, operator, run_id
):
    client = clients.new()
    edited = {"order": 1042, "amount": 500}
    Background(
        lambda: operator.approve(
            operator.pending(external_id=run_id)["id"], edited_arguments=edited
        )
    )
    decision = client.request_approval(REFUND, external_id=run_id)
    assert decision.edited
    assert decision.action == {"name": "issue_refund", "arguments": edited}
    claims = client.verify_receipt(decision)
    assert claims["action_hash"] == action_hash(decision.action)
    with pytest.raises(ReceiptError, match="not the action that was approved"):
        client.verify_receipt(decision, action=REFUND)


def test_a_tampered_receipt_is_refused(clients, live, operator, run_id):
    client = clients.new()
    Background(lambda: operator.approve(operator.pending(external_id=run_id)["id"]))
    decision = client.request_approval(REFUND, external_id=run_id)
    jwks = httpx.get(f"{live.base}/.well-known/jwks.json").json()
    verify_receipt(decision.receipt, action=REFUND, jwks=jwks, escalation_id=decision.escalation_id)

    header, claims_b64, signature = decision.receipt.split(".")
    claims = json.loads(base64.urlsafe_b64decode(claims_b64 + "=="))
    bigger = {"name": "issue_refund", "arguments": {"order": 1042, "amount": 75000}}
    claims["action_hash"] = action_hash(bigger)
    forged_claims = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = f"{header}.{forged_claims}.{signature}"

    with pytest.raises(ReceiptError, match="signature does not verify"):
        client.verify_receipt(forged, action=bigger)
    with pytest.raises(ReceiptError, match="not the action that was approved"):
        client.verify_receipt(decision.receipt, action=bigger)
    with pytest.raises(ReceiptError, match="expired"):
        verify_receipt(decision.receipt, action=REFUND, jwks=jwks, now=claims["exp"] + 3600)
    with pytest.raises(ReceiptError, match="is for"):
        client.verify_receipt(decision.receipt, action=REFUND, escalation_id="esc_other")
    unknown_kid = base64.urlsafe_b64encode(
        json.dumps({"alg": "EdDSA", "typ": "awaithuman-receipt+jwt", "kid": "rk_nope"}).encode()
    ).rstrip(b"=")
    with pytest.raises(ReceiptError, match="unknown key"):
        client.verify_receipt(f"{unknown_kid.decode()}.{claims_b64}.{signature}", action=REFUND)
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none","kid":"x"}').rstrip(b"=").decode()
    with pytest.raises(ReceiptError, match="only EdDSA"):
        client.verify_receipt(f"{none_alg}.{claims_b64}.", action=REFUND)


def test_no_one_answering_in_time_raises_timed_out(clients, run_id):
    client = clients.new()
    with pytest.raises(TimedOut) as caught:
        client.request_approval(REFUND, timeout=1, on_timeout="reject", external_id=run_id)
    assert caught.value.decision.decided_by == {"type": "timeout", "on_timeout": "reject"}


def test_approved_on_timeout_is_an_approval_with_a_receipt(clients, run_id):
    client = clients.new()
    decision = client.request_approval(REFUND, timeout=1, on_timeout="approve")
    assert decision.approved
    assert decision.decided_by["type"] == "timeout"
    assert client.verify_receipt(decision)["sub"] == decision.escalation_id


def test_wait_timeout_gives_up_on_the_client_only(clients, operator, run_id):
    client = clients.new(poll_seconds=1)
    started = time.monotonic()
    with pytest.raises(TimedOut, match="still pending"):
        client.request_approval(REFUND, external_id=run_id, wait_timeout=1.5)
    assert time.monotonic() - started < 5
    assert operator.pending(external_id=run_id)["status"] == "pending"


def test_a_restarted_agent_resumes_its_escalation_by_external_id(clients, operator, run_id):
    first = clients.new()
    with pytest.raises(TimedOut):
        first.request_approval(REFUND, external_id=run_id, wait_timeout=0.5)
    first.close()  # the agent "crashes"

    pending = operator.pending(external_id=run_id)
    Background(lambda: operator.approve(pending["id"]), delay=1)
    decision = clients.new().request_approval(REFUND, external_id=run_id)

    assert decision.escalation_id == pending["id"]
    assert [e.id for e in clients.new().list(external_id=run_id)] == [pending["id"]]
    # The history's filters and search pass through.
    decided = clients.new().list(external_id=run_id, decided_by="human", q="refund")
    assert [e.id for e in decided] == [pending["id"]]
    assert list(clients.new().list(external_id=run_id, decided_by="timeout")) == []


def test_a_retry_after_a_lost_response_makes_no_second_escalation(clients, operator, run_id):
    class LoseFirstResponse(httpx.BaseTransport, httpx.AsyncBaseTransport):
        """The create reaches the server, but its response is lost on the way back."""

        def __init__(self) -> None:
            self.inner = httpx.HTTPTransport()
            self.async_inner = httpx.AsyncHTTPTransport()
            self.lost = 0

        def lose(self, request: httpx.Request) -> None:
            if request.method == "POST" and not self.lost:
                self.lost += 1
                raise httpx.ReadTimeout("response lost", request=request)

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = self.inner.handle_request(request)
            response.read()
            self.lose(request)
            return response

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            response = await self.async_inner.handle_async_request(request)
            await response.aread()
            self.lose(request)
            return response

    transport = LoseFirstResponse()
    client = clients.new(transport=transport)
    created = client.create(kind="approval", title="Refund", action=REFUND, external_id=run_id)
    assert transport.lost == 1
    assert [e.id for e in client.list(external_id=run_id)] == [created.id]


def test_cancel_from_elsewhere_raises_cancelled(clients, operator, run_id):
    client = clients.new()
    other = clients.new()
    Background(lambda: other.cancel(operator.pending(external_id=run_id)["id"]))
    with pytest.raises(Cancelled):
        client.request_approval(REFUND, external_id=run_id)


def test_cancel_twice_is_harmless(clients, run_id):
    client = clients.new()
    created = client.create(kind="approval", title="Refund", action=REFUND)
    assert client.cancel(created.id).status == "cancelled"
    assert client.cancel(created.id).status == "cancelled"


def test_ask_returns_the_answer_text(clients, operator, run_id):
    client = clients.new()
    Background(
        lambda: operator.answer(
            operator.pending(external_id=run_id)["id"],
            outcome="answer",
            response={"answer": "Use the Pro plan."},
        )
    )
    assert client.ask("Which plan fits Acme?", external_id=run_id) == "Use the Pro plan."


class RefundTerms(BaseModel):
    amount: int
    reason: str


def test_ask_with_a_pydantic_schema_returns_a_parsed_model(clients, operator, run_id):
    client = clients.new()

    def human() -> None:
        escalation = operator.pending(external_id=run_id)
        assert escalation["response_schema"]["required"] == ["amount", "reason"]
        operator.answer(
            escalation["id"], outcome="answer", response={"amount": 500, "reason": "goodwill"}
        )

    Background(human)
    terms = client.ask("How much should we refund?", schema=RefundTerms, external_id=run_id)
    assert terms == RefundTerms(amount=500, reason="goodwill")


def test_bad_input_raises_validation_error_with_field_errors(clients, live):
    client = clients.new()
    with pytest.raises(ValidationError) as caught:
        client.request_approval(REFUND, on_timeout="explode")
    assert "on_timeout" in caught.value.errors
    assert caught.value.status == 400


def test_a_wrong_key_raises_auth_error(clients, live):
    bad = live.agent_key[:-1] + ("A" if live.agent_key[-1] != "A" else "B")
    with pytest.raises(AuthError) as caught:
        clients.new(api_key=bad).get("esc_x")
    assert caught.value.status == 401


def test_an_operator_key_cannot_ask(clients, live):
    with pytest.raises(AuthError) as caught:
        clients.new(api_key=live.operator_key).request_approval(REFUND)
    assert caught.value.status == 403
