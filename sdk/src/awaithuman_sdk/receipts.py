"""Decision receipts: prove that the action about to run is exactly what was approved.

A receipt is a compact JWS (EdDSA / Ed25519) the server attaches to every approval. Its claims:
``sub`` (escalation id), ``org``, ``action_hash`` (SHA-256 hex of the canonical JSON of
``{"name": …, "arguments": …}``, the human's edits applied), ``outcome``, ``decided_by``, ``iat``
and ``exp``. The server's public keys are at ``/.well-known/jwks.json``.

Verification here refuses: another algorithm than EdDSA, another ``typ``, an unknown key id
(after one refetch of the JWKS, for a rotation), a bad signature, an expired receipt, an outcome
other than ``approved``, another escalation, and an action whose hash differs. It needs the
``cryptography`` package (``pip install 'awaithuman-sdk[receipts]'``); nothing else in the SDK
does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import threading
import time
from typing import Any

from .errors import MissingDependency, ReceiptError

ALGORITHM = "EdDSA"
TOKEN_TYPE = "awaithuman-receipt+jwt"  # noqa: S105 (a JOSE "typ", not a secret)
JWKS_PATH = "/.well-known/jwks.json"


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def action_hash(action: dict[str, Any] | None) -> str:
    """SHA-256 hex of the canonical JSON of ``{"name": …, "arguments": …}`` (or of ``null``)."""
    if action is not None:
        action = {"name": action["name"], "arguments": action.get("arguments") or {}}
    return hashlib.sha256(canonical_json(action)).hexdigest()


def cryptography_available() -> bool:
    try:
        import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401
    except ImportError:
        return False
    return True


def _b64decode(segment: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ReceiptError("The receipt is not valid base64url.") from exc


def _split(receipt: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    if not isinstance(receipt, str) or receipt.count(".") != 2:
        raise ReceiptError("The receipt is not a compact JWS (three dot-separated parts).")
    header_b64, claims_b64, signature_b64 = receipt.split(".")
    try:
        header = json.loads(_b64decode(header_b64))
        claims = json.loads(_b64decode(claims_b64))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReceiptError("The receipt's header or claims are not JSON.") from exc
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ReceiptError("The receipt's header and claims must be JSON objects.")
    return header, claims, f"{header_b64}.{claims_b64}".encode("ascii"), _b64decode(signature_b64)


def receipt_kid(receipt: str) -> str:
    header, _, _, _ = _split(receipt)
    return str(header.get("kid", ""))


def verify_receipt(
    receipt: str | None,
    *,
    action: dict[str, Any] | None,
    jwks: dict[str, Any],
    escalation_id: str | None = None,
    organization: str | None = None,
    leeway: float = 60,
    now: float | None = None,
) -> dict[str, Any]:
    """Check ``receipt`` against the JWKS and the action about to run; return its claims.

    Raises ``ReceiptError`` on any mismatch; the action must then not run.
    """
    if not receipt:
        raise ReceiptError("The approval carries no receipt; refusing to act without one.")
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError as exc:
        raise MissingDependency(
            "Verifying receipts needs 'cryptography': pip install 'awaithuman-sdk[receipts]'"
        ) from exc

    header, claims, signing_input, signature = _split(receipt)
    if header.get("alg") != ALGORITHM:
        raise ReceiptError(f"Refusing receipt algorithm {header.get('alg')!r}; only EdDSA.")
    if header.get("typ") != TOKEN_TYPE:
        raise ReceiptError(f"Not a decision receipt (typ {header.get('typ')!r}).")
    kid = header.get("kid")
    jwk = next((key for key in jwks.get("keys", []) if key.get("kid") == kid), None)
    if jwk is None:
        raise ReceiptError(f"The receipt is signed by an unknown key {kid!r}.")
    if (
        jwk.get("kty") != "OKP"
        or jwk.get("crv") != "Ed25519"
        or jwk.get("alg", ALGORITHM) != ALGORITHM
    ):
        raise ReceiptError(f"Key {kid!r} is not an Ed25519 signing key.")
    try:
        public_key = Ed25519PublicKey.from_public_bytes(_b64decode(str(jwk.get("x", ""))))
        public_key.verify(signature, signing_input)
    except (InvalidSignature, ValueError) as exc:
        raise ReceiptError("The receipt's signature does not verify: it was altered.") from exc

    now = time.time() if now is None else now
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        raise ReceiptError("The receipt has no valid iat/exp.")
    if now > exp + leeway:
        raise ReceiptError("The receipt has expired; ask for approval again.")
    if iat > now + leeway:
        raise ReceiptError("The receipt is issued in the future; check the clocks.")
    if claims.get("outcome") != "approved":
        raise ReceiptError(f"The receipt records {claims.get('outcome')!r}, not an approval.")
    if escalation_id is not None and claims.get("sub") != escalation_id:
        raise ReceiptError(f"The receipt is for {claims.get('sub')!r}, not {escalation_id!r}.")
    if organization is not None and claims.get("org") != organization:
        raise ReceiptError("The receipt is for another organization.")
    if not hmac.compare_digest(str(claims.get("action_hash", "")), action_hash(action)):
        raise ReceiptError(
            "The action about to run is not the action that was approved "
            "(its canonical hash differs from the receipt's action_hash)."
        )
    return claims


class JWKSCache:
    """The server's JWKS, fetched on first use and again when a receipt names an unknown key
    (a rotation) or the copy is older than ``max_age``; refetches are spaced by ``min_interval``
    so a stream of forged kids cannot hammer the server."""

    def __init__(self, *, max_age: float = 3600, min_interval: float = 10) -> None:
        self.max_age = max_age
        self.min_interval = min_interval
        self._jwks: dict[str, Any] | None = None
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def fresh(self, kid: str) -> dict[str, Any] | None:
        """The cached JWKS if it can check a receipt signed by ``kid``; None: fetch and
        ``store`` it first."""
        age = time.monotonic() - self._fetched_at
        if self._jwks is None or age > self.max_age:
            return None
        known = any(key.get("kid") == kid for key in self._jwks.get("keys", []))
        return None if not known and age >= self.min_interval else self._jwks

    def store(self, jwks: Any) -> dict[str, Any]:
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise ReceiptError("The server's JWKS is malformed.")
        with self._lock:
            self._jwks, self._fetched_at = jwks, time.monotonic()
        return jwks
