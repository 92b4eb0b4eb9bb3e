"""The checkpoint signer: audit checkpoints are signed with the receipt-signing keys.

One key infrastructure for everything we sign (``escalations.receipts``): rotation, encryption
at rest and the JWKS that publishes the public halves. A checkpoint's signed-note key name is the
host of ``AWAITHUMAN_BASE_URL`` and its origin ``<host>/audit/<organization public id>``, so a
checkpoint names the organization by its public id, never by a database key.
"""

from __future__ import annotations

import base64
from urllib.parse import urlsplit

from django.conf import settings

from tenants.models import Organization

from . import receipts
from .models import ReceiptSigningKey

ORIGIN_PATH = "/audit/"


def key_name() -> str:
    return urlsplit(settings.AWAITHUMAN_BASE_URL).netloc or "awaithuman"


def _raw(public_key: str) -> bytes:
    return base64.urlsafe_b64decode(public_key + "=" * (-len(public_key) % 4))


class ReceiptKeyCheckpointSigner:
    """``audit.checkpoints.CheckpointSigner`` over the receipt-signing keys."""

    def origin(self, organization_id: int) -> str:
        public_id = Organization.objects.values_list("public_id", flat=True).get(pk=organization_id)
        return f"{key_name()}{ORIGIN_PATH}{public_id}"

    def organization_id(self, origin: str) -> int | None:
        _, separator, public_id = origin.rpartition(ORIGIN_PATH)
        if not separator:
            return None
        return Organization.objects.filter(public_id=public_id).values_list("pk", flat=True).first()

    def sign(self, message: bytes) -> tuple[str, bytes, bytes]:
        public_key, signature = receipts.sign_bytes(message)
        return key_name(), public_key, signature

    def public_keys(self) -> list[bytes]:
        # Every key that ever signed, not only those still in the JWKS: a checkpoint kept for
        # years must still verify after its key was retired (only the private half is erased).
        return [_raw(key) for key in ReceiptSigningKey.objects.values_list("public_key", flat=True)]
