"""Decision receipts: a signed statement that a human (or a policy) approved *this exact action*.

Every approved escalation's ``decision.receipt`` is a compact JWS (RFC 7515), algorithm EdDSA
with an Ed25519 key (RFC 8037), header ``{"alg": "EdDSA", "typ": "awaithuman-receipt+jwt",
"kid": …}``, over these claims::

    iss          AWAITHUMAN_BASE_URL of the server that signed it
    sub          the escalation id (esc_…)
    org          the organization's public id (org_…)
    action_hash  SHA-256 hex of the canonical JSON of the approved action, edits applied:
                 {"name": action.name, "arguments": edited_arguments or action.arguments}
                 (``null`` for an approval without an action)
    outcome      "approved"
    decided_by   the decision's ``decided_by`` object (user, policy or timeout)
    iat          when it was decided (Unix seconds)
    exp          iat + RECEIPT_TTL_SECONDS (default 24 h): an older approval is no license to act

Canonical JSON is ``json.dumps(value, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` encoded as UTF-8. The public keys are published at
``/.well-known/jwks.json``; an executor verifies the receipt against the action it is about to
run (the SDK does: ``awaithuman_sdk.receipts``).

Where it is computed: once, when the escalation is approved (``escalations.decisions``), in the
decision's transaction, and stored on the escalation (``Escalation.receipt``); every read returns
that same receipt, and after a key rotation it stays verifiable through the grace period, which
is never shorter than its lifetime. An approval decided before receipts were stored gets its
receipt signed on its first read, and stored then (``receipt_for``).

No JOSE library: the ``cryptography`` package (already a dependency of daphne's TLS stack, now
declared explicitly) signs, and the JWS framing is three base64url segments. Issuing one fixed
algorithm leaves nothing to negotiate (no ``alg: none``, no HMAC/RSA confusion), which is what most
JOSE-library vulnerabilities were about; PyJWT or joserfc would add a dependency to do the same.

Keys (``ReceiptSigningKey``): one active key, created on first need; ``manage.py receipt_keys
rotate`` makes a new active key and retires the old one, whose public half stays in the JWKS for
``RECEIPT_KEY_GRACE_SECONDS`` (default 7 days, never less than the receipt lifetime) and whose
private half is erased. Private keys are encrypted at rest with a Fernet key derived (HKDF) from
``SECRET_KEY``; ``SECRET_KEY_FALLBACKS`` still decrypt, so Django's key rotation works. If no
configured secret can decrypt the active key (``SECRET_KEY`` replaced outright), that key is
retired and a new one made, so receipts keep flowing. Keys are in no admin screen and no API.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import threading
import time
from datetime import timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_safe

from .models import Escalation, ReceiptSigningKey

logger = logging.getLogger(__name__)

ALGORITHM = "EdDSA"
TOKEN_TYPE = "awaithuman-receipt+jwt"  # noqa: S105 (a JOSE "typ", not a secret)
DEFAULT_TTL_SECONDS = 24 * 3600
DEFAULT_GRACE_SECONDS = 7 * 24 * 3600
# How long a process keeps using the active key it looked up; another process's rotation is
# picked up within this time (the retired key stays published, so nothing fails meanwhile).
ACTIVE_KEY_CACHE_SECONDS = 30


def receipt_ttl_seconds() -> int:
    return int(getattr(settings, "RECEIPT_TTL_SECONDS", DEFAULT_TTL_SECONDS))


def key_grace_seconds() -> int:
    grace = int(getattr(settings, "RECEIPT_KEY_GRACE_SECONDS", DEFAULT_GRACE_SECONDS))
    return max(grace, receipt_ttl_seconds())


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def approved_action(escalation: Escalation) -> dict[str, Any] | None:
    """The action a human approved, edits applied: what the agent may now run."""
    if not escalation.action:
        return None
    arguments = escalation.edited_arguments
    if arguments is None:
        arguments = escalation.action.get("arguments") or {}
    return {"name": escalation.action["name"], "arguments": arguments}


def action_hash(action: dict[str, Any] | None) -> str:
    return hashlib.sha256(canonical_json(action)).hexdigest()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# --- Keys ------------------------------------------------------------------------------------


def _fernet() -> MultiFernet:
    secrets_in_order = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([Fernet(_derive(secret)) for secret in secrets_in_order])


def _derive(secret: str) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"awaithuman receipt signing key"
    )
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode("utf-8")))


class _KeyCache:
    """Decrypted private keys by kid (a kid is random and never reused), and the active kid."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.private_keys: dict[str, Ed25519PrivateKey] = {}
        self.active: tuple[float, str] | None = None

    def clear(self) -> None:
        with self.lock:
            self.private_keys.clear()
            self.active = None


_cache = _KeyCache()


def _private_key(key: ReceiptSigningKey) -> Ed25519PrivateKey:
    cached = _cache.private_keys.get(key.kid)
    if cached is not None:
        return cached
    raw = _fernet().decrypt(key.private_key_encrypted.encode("ascii"))
    private_key = Ed25519PrivateKey.from_private_bytes(raw)
    with _cache.lock:
        _cache.private_keys[key.kid] = private_key
    return private_key


def _new_key() -> tuple[ReceiptSigningKey, Ed25519PrivateKey]:
    private_key = Ed25519PrivateKey.generate()
    public_raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    private_raw = private_key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    key = ReceiptSigningKey(
        kid=f"rk_{secrets.token_hex(8)}",
        public_key=_b64url(public_raw),
        private_key_encrypted=_fernet().encrypt(private_raw).decode("ascii"),
    )
    return key, private_key


def _retire(key: ReceiptSigningKey) -> None:
    key.active = False
    key.retired_at = timezone.now()
    key.private_key_encrypted = ""
    key.save(update_fields=["active", "retired_at", "private_key_encrypted"])


def signing_key_rotate() -> ReceiptSigningKey:
    """Make a new active key; the old one stays published (public half only) for the grace."""
    with transaction.atomic():
        for old in ReceiptSigningKey.objects.select_for_update().filter(active=True):
            _retire(old)
        key, private_key = _new_key()
        key.save()
    _cache.clear()
    with _cache.lock:
        _cache.private_keys[key.kid] = private_key
    logger.info("receipt signing key rotated: %s is now active", key.kid)
    return key


def _active_signing_key() -> tuple[str, Ed25519PrivateKey]:
    cached = _cache.active
    if cached is not None and cached[0] > time.monotonic():
        kid = cached[1]
        private_key = _cache.private_keys.get(kid)
        if private_key is not None:
            return kid, private_key
    key = ReceiptSigningKey.objects.filter(active=True).first()
    if key is None:
        key = _create_first_key()
    try:
        private_key = _private_key(key)
    except InvalidToken:
        logger.error(
            "receipt signing key %s cannot be decrypted with SECRET_KEY or SECRET_KEY_FALLBACKS; "
            "retiring it and making a new one",
            key.kid,
        )
        key = signing_key_rotate()
        private_key = _private_key(key)
    # Only a committed row may be remembered: a key made inside a transaction that later rolls
    # back must not sign anything after it (its public half would never be published).
    if not connection.in_atomic_block:
        with _cache.lock:
            _cache.active = (time.monotonic() + ACTIVE_KEY_CACHE_SECONDS, key.kid)
    return key.kid, private_key


def _create_first_key() -> ReceiptSigningKey:
    key, private_key = _new_key()
    try:
        # A savepoint: losing the race to another process must not break the caller's transaction.
        with transaction.atomic():
            key.save()
    except IntegrityError:
        # Another process made the first key at the same moment; use theirs.
        return ReceiptSigningKey.objects.get(active=True)
    with _cache.lock:
        _cache.private_keys[key.kid] = private_key
    logger.info("receipt signing key %s created", key.kid)
    return key


def published_keys() -> list[ReceiptSigningKey]:
    """The active key and the retired keys still inside their grace period, newest first."""
    cutoff = timezone.now() - timedelta(seconds=key_grace_seconds())
    return list(
        ReceiptSigningKey.objects.filter(active=True)
        | ReceiptSigningKey.objects.filter(retired_at__gte=cutoff)
    )


def jwks() -> dict[str, Any]:
    return {
        "keys": [
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "x": key.public_key,
                "kid": key.kid,
                "alg": ALGORITHM,
                "use": "sig",
            }
            for key in published_keys()
        ]
    }


# --- Receipts --------------------------------------------------------------------------------


def receipt_claims(escalation: Escalation) -> dict[str, Any]:
    issued_at = int(escalation.decided_at.timestamp()) if escalation.decided_at else 0
    return {
        "iss": settings.AWAITHUMAN_BASE_URL,
        "sub": escalation.public_id,
        "org": escalation.organization.public_id,
        "action_hash": action_hash(approved_action(escalation)),
        "outcome": escalation.status,
        "decided_by": escalation.decided_by,
        "iat": issued_at,
        "exp": issued_at + receipt_ttl_seconds(),
    }


def sign(claims: dict[str, Any]) -> str:
    kid, private_key = _active_signing_key()
    header = {"alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": kid}
    signing_input = f"{_b64url(canonical_json(header))}.{_b64url(canonical_json(claims))}"
    signature = private_key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_b64url(signature)}"


def sign_bytes(message: bytes) -> tuple[bytes, bytes]:
    """``(raw public key, Ed25519 signature)`` of ``message`` with the active key (checkpoints)."""
    _, private_key = _active_signing_key()
    public_key = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return public_key, private_key.sign(message)


def receipt_sign(escalation: Escalation) -> str:
    """Sign the receipt of an escalation being approved; its decision fields are already set."""
    return sign(receipt_claims(escalation))


def receipt_for(escalation: Escalation) -> str | None:
    """The receipt of an approved escalation; ``None`` for every other state, and once its
    payloads are redacted (the approved arguments it would hash are gone)."""
    if escalation.status != Escalation.Status.APPROVED or escalation.redacted_at is not None:
        return None
    if not escalation.receipt:
        # Approved before receipts were stored: sign it now, once (the conditional UPDATE keeps
        # the first of two concurrent reads; Ed25519 makes both the same under one key anyway).
        escalation.receipt = receipt_sign(escalation)
        Escalation.objects.filter(pk=escalation.pk, receipt="").update(receipt=escalation.receipt)
    return escalation.receipt


@require_safe
def jwks_view(request: HttpRequest) -> JsonResponse:
    """``/.well-known/jwks.json``: public, cacheable for a few minutes (verifiers refetch on an
    unknown kid, so a rotation is picked up at once)."""
    response = JsonResponse(jwks())
    response["Cache-Control"] = "public, max-age=300"
    response["Access-Control-Allow-Origin"] = "*"
    return response
