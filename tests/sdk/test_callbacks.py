"""``verify_callback``: Standard Webhooks signatures, checked without a server."""

from __future__ import annotations

import base64
import json

import pytest
from awaithuman_sdk import WebhookVerificationError, verify_callback
from awaithuman_sdk.callbacks import sign_callback

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
BODY = json.dumps({"type": "escalation.decided", "data": {"id": "esc_1"}}).encode()
NOW = 1_750_000_000


def headers(secret: str = SECRET, *, body: bytes = BODY, at: int = NOW, msg_id: str = "msg_1"):
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": sign_callback(secret=secret, msg_id=msg_id, timestamp=at, body=body),
    }


def test_a_valid_callback_returns_its_payload():
    payload = verify_callback(headers(), BODY, SECRET, now=NOW + 10)
    assert payload["data"]["id"] == "esc_1"


def test_the_spec_example_verifies():
    # The example of the Standard Webhooks reference libraries.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = '{"test": 2432232314}'
    signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    found = verify_callback(
        {
            "Webhook-Id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "Webhook-Timestamp": "1614265330",
            "Webhook-Signature": signature,
        },
        body,
        secret,
        now=1614265330,
    )
    assert found == {"test": 2432232314}


def test_an_altered_body_is_refused():
    with pytest.raises(WebhookVerificationError, match="No webhook-signature matches"):
        verify_callback(headers(), BODY.replace(b"esc_1", b"esc_2"), SECRET, now=NOW)


def test_a_wrong_secret_is_refused():
    other = "whsec_" + base64.b64encode(b"another secret of 32 bytes......").decode()
    with pytest.raises(WebhookVerificationError):
        verify_callback(headers(), BODY, other, now=NOW)


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_callback_outside_five_minutes_is_refused(skew):
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_callback(headers(), BODY, SECRET, now=NOW + skew)


def test_any_of_several_signatures_and_secrets_may_match():
    old = "whsec_" + base64.b64encode(b"the old secret, 32 bytes long...").decode()
    both = headers(old)
    both["webhook-signature"] = "v1,bm90LWl0 " + both["webhook-signature"]
    assert verify_callback(both, BODY, [SECRET, old], now=NOW)["type"] == "escalation.decided"


def test_missing_headers_are_refused():
    with pytest.raises(WebhookVerificationError, match="Missing"):
        verify_callback({}, BODY, SECRET)
