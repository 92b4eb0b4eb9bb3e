"""Verify the signed callbacks AwaitHuman POSTs to an agent's ``callback_url``.

Standard Webhooks (https://www.standardwebhooks.com/): headers ``webhook-id``,
``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (space-separated ``v1,<base64>``
entries; more than one while a secret rotates); the signature is
``base64(HMAC-SHA256(secret, f"{id}.{timestamp}.{body}"))`` with the secret's bytes being the
base64 after ``whsec_``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import WebhookVerificationError

TOLERANCE_SECONDS = 5 * 60


def _secret_bytes(secret: str) -> bytes:
    raw = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WebhookVerificationError("The signing secret is not whsec_<base64>.") from exc


def sign_callback(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``v1,<base64>`` signature for one message (the server's side; handy in tests)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify_callback(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | Iterable[str],
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a callback's signature and age; return its JSON payload.

    ``headers`` may be any mapping (a framework's case-insensitive headers or a plain dict);
    ``body`` must be the raw request body, byte for byte. ``secret`` may be several secrets
    (during a rotation). Raises ``WebhookVerificationError``.
    """
    lowered = {str(name).lower(): str(value) for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    timestamp_raw = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not msg_id or not timestamp_raw or not signatures:
        raise WebhookVerificationError(
            "Missing webhook-id, webhook-timestamp or webhook-signature header."
        )
    try:
        timestamp = int(timestamp_raw)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer.") from None
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance:
        raise WebhookVerificationError("The callback is too old or from the future (replay?).")

    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    secrets = [secret] if isinstance(secret, str) else list(secret)
    expected = [
        sign_callback(secret=each, msg_id=msg_id, timestamp=timestamp, body=raw) for each in secrets
    ]
    offered = [part for part in signatures.split() if part.startswith("v1,")]
    if not any(hmac.compare_digest(mine, theirs) for mine in expected for theirs in offered):
        raise WebhookVerificationError(
            "No webhook-signature matches: wrong secret or altered body."
        )
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WebhookVerificationError("The callback body is not JSON.") from exc
