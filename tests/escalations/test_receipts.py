"""Decision receipts: every approval carries a JWS over the exact approved action; keys rotate.

Receipts are verified here with ``cryptography`` directly (not with ``escalations.receipts``), the
way an outside executor would: JWKS from the public endpoint, then the signature, then the claims.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management import call_command
from django.test import Client, override_settings
from django.utils import timezone

from escalations import deadlines, receipts
from escalations.models import Escalation, Policy, ReceiptSigningKey
from tests.conftest import APPROVAL, create_escalation

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_key_cache():
    receipts._cache.clear()
    yield
    receipts._cache.clear()


def _b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _jwks() -> dict[str, Any]:
    response = Client().get("/.well-known/jwks.json")
    assert response.status_code == 200
    return response.json()


def verify(receipt: str, jwks: dict[str, Any] | None = None) -> dict[str, Any]:
    """Verify like an outside executor: header, known kid, EdDSA signature; return the claims."""
    header_b64, claims_b64, signature_b64 = receipt.split(".")
    header = json.loads(_b64decode(header_b64))
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "awaithuman-receipt+jwt"
    keys = {key["kid"]: key for key in (jwks or _jwks())["keys"]}
    jwk = keys[header["kid"]]
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
    public_key = Ed25519PublicKey.from_public_bytes(_b64decode(jwk["x"]))
    public_key.verify(_b64decode(signature_b64), f"{header_b64}.{claims_b64}".encode())
    return json.loads(_b64decode(claims_b64))


def sha256_of(action: Any) -> str:
    canonical = json.dumps(action, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def answer(tenant, public_id: str, person: str = "bob", **body: Any) -> dict[str, Any]:
    response = tenant.client_for(person).post(
        f"/api/v1/escalations/{public_id}/responses", body, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def test_an_approval_carries_a_receipt_over_the_exact_action(acme):
    created = create_escalation(acme)
    decided = answer(acme, created["id"], outcome="approve", comment="ok")

    claims = verify(decided["decision"]["receipt"])

    assert claims["sub"] == created["id"]
    assert claims["org"] == acme.organization.public_id
    assert claims["outcome"] == "approved"
    assert claims["decided_by"]["type"] == "user"
    assert claims["decided_by"]["email"] == "bob@acme.test"
    assert claims["action_hash"] == sha256_of(APPROVAL["action"])
    assert claims["exp"] - claims["iat"] == 24 * 3600


def test_an_approval_with_edits_hashes_the_edited_arguments(acme):
    created = create_escalation(acme)
    edited = {"order": 1042, "amount": 500}
    decided = answer(acme, created["id"], outcome="approve", edited_arguments=edited)

    claims = verify(decided["decision"]["receipt"])

    assert claims["action_hash"] == sha256_of({"name": "issue_refund", "arguments": edited})
    assert claims["action_hash"] != sha256_of(APPROVAL["action"])


def test_the_canonical_json_keeps_unicode_and_sorts_keys(acme):
    action = {"name": "send_email", "arguments": {"to": "zoë@example.com", "body": "Grüße", "a": 1}}
    created = create_escalation(acme, action=action)
    decided = answer(acme, created["id"], outcome="approve")
    expected = hashlib.sha256(
        '{"arguments":{"a":1,"body":"Grüße","to":"zoë@example.com"},"name":"send_email"}'.encode()
    ).hexdigest()
    assert verify(decided["decision"]["receipt"])["action_hash"] == expected


def test_the_receipt_is_stable_across_reads_and_the_wait(acme):
    created = create_escalation(acme)
    decided = answer(acme, created["id"], outcome="approve")
    again = acme.agent_client().get(f"/api/v1/escalations/{created['id']}").json()
    listed = acme.agent_client().get("/api/v1/escalations").json()["results"][0]
    assert decided["decision"]["receipt"] == again["decision"]["receipt"]
    assert listed["decision"]["receipt"] == again["decision"]["receipt"]


def test_the_receipt_is_signed_at_the_decision_and_stored(acme):
    created = create_escalation(acme)
    decided = answer(acme, created["id"], outcome="approve")
    assert Escalation.objects.get(public_id=created["id"]).receipt == decided["decision"]["receipt"]


def test_an_approval_decided_before_receipts_were_stored_gets_one_on_first_read(acme):
    created = create_escalation(acme)
    answer(acme, created["id"], outcome="approve")
    Escalation.objects.filter(public_id=created["id"]).update(receipt="")

    read = acme.agent_client().get(f"/api/v1/escalations/{created['id']}").json()

    claims = verify(read["decision"]["receipt"])
    assert claims["sub"] == created["id"]
    assert claims["action_hash"] == sha256_of(APPROVAL["action"])
    assert Escalation.objects.get(public_id=created["id"]).receipt == read["decision"]["receipt"]


@pytest.mark.parametrize(
    ("outcome", "status"),
    [("reject", "rejected"), ("cancel", "cancelled")],
)
def test_only_approvals_carry_a_receipt(acme, outcome, status):
    created = create_escalation(acme)
    if outcome == "cancel":
        response = acme.agent_client().post(f"/api/v1/escalations/{created['id']}/cancel")
        body = response.json()
    else:
        body = answer(acme, created["id"], outcome=outcome, comment="no")
    assert body["status"] == status
    assert body["decision"]["receipt"] is None


def test_an_answered_question_carries_no_receipt(acme):
    created = create_escalation(acme, kind="question", title="Which plan?", action=None)
    body = answer(acme, created["id"], outcome="answer", response={"answer": "Pro"})
    assert body["status"] == "answered"
    assert body["decision"]["receipt"] is None


def test_approved_on_timeout_carries_a_receipt(acme):
    created = create_escalation(acme, timeout_seconds=5, on_timeout="approve")
    deadlines.timers_due(timezone.now() + timedelta(seconds=6))
    body = acme.agent_client().get(f"/api/v1/escalations/{created['id']}").json()
    assert body["status"] == "approved"
    claims = verify(body["decision"]["receipt"])
    assert claims["decided_by"] == {"type": "timeout", "on_timeout": "approve"}
    assert claims["action_hash"] == sha256_of(APPROVAL["action"])


def test_a_policy_auto_approval_carries_a_receipt(acme):
    Policy.objects.create(
        organization=acme.organization,
        name="Small refunds",
        condition="action.arguments.amount < 100",
        outcome=Policy.Outcome.AUTO_APPROVE,
    )
    action = {"name": "issue_refund", "arguments": {"order": 7, "amount": 20}}
    body = create_escalation(acme, action=action)
    assert body["status"] == "approved"
    claims = verify(body["decision"]["receipt"])
    assert claims["decided_by"]["type"] == "policy"
    assert claims["action_hash"] == sha256_of(action)


def test_a_tampered_receipt_fails_verification(acme):
    created = create_escalation(acme)
    receipt = answer(acme, created["id"], outcome="approve")["decision"]["receipt"]
    header, claims_b64, signature = receipt.split(".")
    claims = json.loads(_b64decode(claims_b64))
    claims["action_hash"] = sha256_of({"name": "issue_refund", "arguments": {"amount": 75000}})
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidSignature):
        verify(f"{header}.{forged}.{signature}")


@override_settings(RECEIPT_TTL_SECONDS=600)
def test_the_receipt_lifetime_is_a_setting(acme):
    created = create_escalation(acme)
    claims = verify(answer(acme, created["id"], outcome="approve")["decision"]["receipt"])
    assert claims["exp"] - claims["iat"] == 600


def test_the_first_key_is_made_on_first_need_and_published(acme):
    assert _jwks() == {"keys": []}
    created = create_escalation(acme)
    receipt = answer(acme, created["id"], outcome="approve")["decision"]["receipt"]
    (key,) = ReceiptSigningKey.objects.all()
    assert json.loads(_b64decode(receipt.split(".")[0]))["kid"] == key.kid
    assert [jwk["kid"] for jwk in _jwks()["keys"]] == [key.kid]


def test_the_jwks_holds_public_keys_only_and_is_cacheable(acme):
    receipts.signing_key_rotate()
    response = Client().get("/.well-known/jwks.json")
    assert response["Cache-Control"] == "public, max-age=300"
    (jwk,) = response.json()["keys"]
    assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert Client().post("/.well-known/jwks.json").status_code == 405


def test_the_private_key_is_encrypted_at_rest(acme):
    key = receipts.signing_key_rotate()
    stored = ReceiptSigningKey.objects.get(pk=key.pk).private_key_encrypted
    assert stored.startswith("gAAAAA")  # a Fernet token, not a raw or PEM key
    assert "PRIVATE KEY" not in stored


def test_rotation_keeps_the_old_key_published_and_old_receipts_valid(acme):
    created = create_escalation(acme)
    old_receipt = answer(acme, created["id"], outcome="approve")["decision"]["receipt"]
    old_kid = json.loads(_b64decode(old_receipt.split(".")[0]))["kid"]

    out = StringIO()
    call_command("receipt_keys", "rotate", stdout=out)
    new_kid = out.getvalue().strip()

    assert new_kid != old_kid
    assert {jwk["kid"] for jwk in _jwks()["keys"]} == {old_kid, new_kid}
    verify(old_receipt)
    fresh = acme.agent_client().get(f"/api/v1/escalations/{created['id']}").json()
    assert fresh["decision"]["receipt"] == old_receipt  # signed once, when it was decided
    newer = answer(acme, create_escalation(acme)["id"], outcome="approve")["decision"]["receipt"]
    assert json.loads(_b64decode(newer.split(".")[0]))["kid"] == new_kid
    verify(newer)
    retired = ReceiptSigningKey.objects.get(kid=old_kid)
    assert retired.private_key_encrypted == ""
    assert not retired.active


def test_a_retired_key_leaves_the_jwks_after_the_grace_period(acme):
    old = receipts.signing_key_rotate()
    new = receipts.signing_key_rotate()
    ReceiptSigningKey.objects.filter(pk=old.pk).update(
        retired_at=timezone.now() - timedelta(days=8)
    )
    assert [jwk["kid"] for jwk in _jwks()["keys"]] == [new.kid]


def test_receipt_keys_list_names_each_key_and_its_state(acme):
    old = receipts.signing_key_rotate()
    new = receipts.signing_key_rotate()
    out = StringIO()
    call_command("receipt_keys", "list", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:2] == [new.kid, "active"]
    assert lines[1].split()[:2] == [old.kid, "published"]


@override_settings(SECRET_KEY="a-completely-different-secret-key-of-more-than-fifty-chars!")
def test_a_key_that_no_secret_can_decrypt_is_replaced(acme, settings):
    with override_settings(SECRET_KEY="the-original-secret-key-that-was-replaced-by-the-operator"):
        lost = receipts.signing_key_rotate()
    receipts._cache.clear()
    created = create_escalation(acme)
    receipt = answer(acme, created["id"], outcome="approve")["decision"]["receipt"]
    kid = json.loads(_b64decode(receipt.split(".")[0]))["kid"]
    assert kid != lost.kid
    verify(receipt)


def test_secret_key_fallbacks_still_decrypt(acme):
    with override_settings(SECRET_KEY="the-original-secret-key-that-is-being-rotated-out-now!"):
        key = receipts.signing_key_rotate()
    receipts._cache.clear()
    with override_settings(
        SECRET_KEY="the-new-secret-key-after-rotation-of-more-than-fifty-chars",
        SECRET_KEY_FALLBACKS=["the-original-secret-key-that-is-being-rotated-out-now!"],
    ):
        created = create_escalation(acme)
        receipt = answer(acme, created["id"], outcome="approve")["decision"]["receipt"]
    assert json.loads(_b64decode(receipt.split(".")[0]))["kid"] == key.kid


def test_signing_keys_are_not_in_the_admin():
    from django.contrib import admin

    assert ReceiptSigningKey not in admin.site._registry
    assert Escalation in admin.site._registry
