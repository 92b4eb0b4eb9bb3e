"""Signed checkpoints: a statement, signed with Ed25519, of where an organization's chain stood.

The hash chain alone cannot expose someone who rewrites a *whole* chain and recomputes every
hash (a database superuser can drop the triggers). A checkpoint kept outside our database can:
once a webhook receiver, an auditor or a monitor holds "organization X's chain had N events and
its head hash was H", any later chain whose event N does not hash to H is a rewritten one.

Format: a C2SP signed note (https://c2sp.org/signed-note) whose text is a C2SP tlog checkpoint
(https://c2sp.org/tlog-checkpoint), the format of Go's checksum database and Sigstore::

    <origin>                      e.g. "awaithuman.example.com/audit/org_1a2b…"
    <last seq, decimal>           the "tree size": how many events the chain holds
    <head hash, base64 (std)>     the 32 bytes of the last event's SHA-256 hash
                                  (blank line)
    — <key name> <base64(key id (4 bytes) || Ed25519 signature (64 bytes))>

The signature covers the text up to and including the newline after the hash. The key id is
the first four bytes of SHA-256(key name || "\\n" || 0x01 || 32-byte public key), 0x01 being
the signed-note algorithm byte of Ed25519. Our "tree" is a hash chain rather than a Merkle
tree, so the root hash is the chain head: a checkpoint proves the events 1…N it covers, and the
chain verifier proves every later event links back to event N.

``audit`` holds no key: a higher app registers the ``CheckpointSigner`` (the receipt-signing
keys, ``escalations.checkpoints``) and the handlers that send new checkpoints elsewhere
(organization webhooks). Issuing a checkpoint is deliberately *not* an audit event: it would
move the head it just signed, and the next run would sign again, forever.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import IntegrityError, transaction
from django.db.models import F, Max, OuterRef, Q, Subquery
from django.utils import timezone

from .models import AuditEvent, ChainHead, Checkpoint
from .services import audit_seal, audit_verify_chain

ED25519_ALGORITHM = b"\x01"
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space


class CheckpointError(Exception):
    """A checkpoint that cannot be issued, parsed or verified; the message says why."""


class CheckpointSigner(Protocol):
    """What a higher app provides to sign checkpoints and to recognise them again."""

    def origin(self, organization_id: int) -> str:
        """The checkpoint origin line of an organization's chain."""

    def organization_id(self, origin: str) -> int | None:
        """The organization an origin line names, or ``None``."""

    def sign(self, message: bytes) -> tuple[str, bytes, bytes]:
        """``(key name, raw public key, signature)`` of ``message`` with the active key."""

    def public_keys(self) -> list[bytes]:
        """Every raw public key that ever signed, retired ones included."""


_signer: list[CheckpointSigner] = []
_handlers: list[Callable[[Checkpoint], None]] = []


def register_signer(signer: CheckpointSigner) -> None:
    _signer[:] = [signer]


def on_checkpoint(handler: Callable[[Checkpoint], None]) -> None:
    """Call ``handler`` with each new checkpoint, inside the transaction that stores it (so a
    handler that writes rows, e.g. outgoing webhook messages, commits with it)."""
    if handler not in _handlers:
        _handlers.append(handler)


def signer() -> CheckpointSigner:
    if not _signer:
        raise CheckpointError("no checkpoint signer is registered")
    return _signer[0]


# --- The note format ---------------------------------------------------------------------------


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519_ALGORITHM + public_key).digest()[
        :4
    ]


def vkey(name: str, public_key: bytes) -> str:
    """The signed-note verifier key string ``name+hex key id+base64(0x01 || key)``."""
    encoded = base64.b64encode(ED25519_ALGORITHM + public_key).decode("ascii")
    return f"{name}+{key_id(name, public_key).hex()}+{encoded}"


def checkpoint_text(origin: str, seq: int, head_hash: str) -> str:
    root = base64.b64encode(bytes.fromhex(head_hash)).decode("ascii")
    return f"{origin}\n{seq}\n{root}\n"


def note_sign(text: str, *, sign: Callable[[bytes], tuple[str, bytes, bytes]]) -> str:
    name, public_key, signature = sign(text.encode("utf-8"))
    line = base64.b64encode(key_id(name, public_key) + signature).decode("ascii")
    return f"{text}\n{SIGNATURE_PREFIX}{name} {line}\n"


@dataclass(frozen=True)
class ParsedCheckpoint:
    origin: str
    seq: int
    hash: str  # lowercase hex
    text: str
    signatures: tuple[tuple[str, bytes, bytes], ...]  # (key name, key id, signature)


def note_parse(note: str) -> ParsedCheckpoint:
    """Split a signed checkpoint into its fields; ``CheckpointError`` if it is malformed.

    A copy that went through e-mail or a Windows editor may end its lines with CRLF; the signed
    text never holds a carriage return, so those are read as plain newlines (a changed byte
    still fails the signature)."""
    note = note.replace("\r\n", "\n")
    text, separator, signature_block = note.partition("\n\n")
    if not separator or not signature_block.endswith("\n"):
        raise CheckpointError("not a signed note: no blank line before the signatures")
    lines = text.split("\n")
    if len(lines) < 3:
        raise CheckpointError("a checkpoint needs an origin, a size and a root hash")
    origin, size, root = lines[:3]
    if not origin or not size.isdigit() or (size != "0" and size.startswith("0")):
        raise CheckpointError("malformed origin or size line")
    try:
        raw_hash = base64.b64decode(root, validate=True)
    except binascii.Error:
        raise CheckpointError("the root hash is not base64") from None
    if len(raw_hash) != 32:
        raise CheckpointError("the root hash is not 32 bytes")
    signatures = []
    for line in signature_block[:-1].split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise CheckpointError(f"malformed signature line: {line[:40]!r}")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].rpartition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise CheckpointError("a signature is not base64") from None
        if not name or len(raw) < 5:
            raise CheckpointError(f"malformed signature line: {line[:40]!r}")
        signatures.append((name, raw[:4], raw[4:]))
    return ParsedCheckpoint(
        origin=origin,
        seq=int(size),
        hash=raw_hash.hex(),
        text=text + "\n",
        signatures=tuple(signatures),
    )


def note_verify(note: str, keys: list[bytes]) -> ParsedCheckpoint:
    """Parse ``note`` and check that one of ``keys`` signed it; ``CheckpointError`` otherwise.

    A signature line names its key by name and key id; the id binds the name to one public key,
    so a trusted public key is recognised under whatever name it signed with.
    """
    parsed = note_parse(note)
    for name, signature_key_id, signature in parsed.signatures:
        public_key = next((key for key in keys if key_id(name, key) == signature_key_id), None)
        if public_key is None:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(
                signature, parsed.text.encode("utf-8")
            )
        except InvalidSignature:
            raise CheckpointError(f"the signature of key {name!r} does not verify") from None
        return parsed
    raise CheckpointError("no signature by a known key")


def note_verifier_keys(note: str) -> list[str]:
    """The signed-note verifier key (``vkey``) of each signature on ``note`` by a key we know,
    what a holder of the note needs to check it with any signed-note tool."""
    parsed = note_parse(note)
    keys = signer().public_keys()
    return [
        vkey(name, public_key)
        for name, signature_key_id, _ in parsed.signatures
        for public_key in keys
        if key_id(name, public_key) == signature_key_id
    ]


# --- Issuing -----------------------------------------------------------------------------------


def checkpoint_issue(*, organization_id: int) -> tuple[Checkpoint, bool]:
    """Sign the organization's chain head; returns the checkpoint and whether it is new.

    Seals whatever is waiting first, so the checkpoint covers every committed event. At an
    unchanged head the existing checkpoint is returned: one checkpoint per ``seq``.
    ``CheckpointError`` if the chain is still empty (there is nothing to sign).
    """
    audit_seal(organization_id=organization_id)
    head = ChainHead.objects.filter(organization_id=organization_id).first()
    if head is None or head.seq == 0:
        raise CheckpointError("the audit chain is empty: there is nothing to sign yet")
    existing = Checkpoint.objects.filter(organization_id=organization_id, seq=head.seq).first()
    if existing is not None:
        return existing, False
    active = signer()
    text = checkpoint_text(active.origin(organization_id), head.seq, head.hash)
    checkpoint = Checkpoint(
        public_id=f"ckp_{secrets.token_hex(14)}",
        organization_id=organization_id,
        seq=head.seq,
        hash=head.hash,
        note=note_sign(text, sign=active.sign),
        created_at=timezone.now(),
    )
    try:
        with transaction.atomic():
            checkpoint.save()
            for handler in list(_handlers):
                handler(checkpoint)
    except IntegrityError:
        # Another process signed the same head at the same moment; theirs stands.
        return Checkpoint.objects.get(organization_id=organization_id, seq=head.seq), False
    return checkpoint, True


def checkpoints_issue_due() -> int:
    """Sign every chain whose head moved since its last checkpoint; returns how many.

    Seals first, so that events committed a moment ago are not left for the next run."""
    audit_seal()
    latest = (
        Checkpoint.objects.filter(organization_id=OuterRef("organization_id"))
        .values("organization_id")
        .annotate(last=Max("seq"))
        .values("last")
    )
    due = (
        ChainHead.objects.filter(seq__gt=0)
        .annotate(last_signed=Subquery(latest))
        .filter(Q(last_signed__isnull=True) | Q(last_signed__lt=F("seq")))
        .values_list("organization_id", flat=True)
    )
    issued = 0
    for organization_id in list(due):
        _, created = checkpoint_issue(organization_id=organization_id)
        issued += created
    return issued


# --- Verifying against a kept checkpoint -------------------------------------------------------


@dataclass(frozen=True)
class CheckpointResult:
    ok: bool
    organization_id: int | None
    seq: int
    reason: str = ""


def audit_verify_checkpoint(note: str) -> CheckpointResult:
    """Prove that the current chain extends a checkpoint someone kept.

    Checks, in order: the note is signed by one of our keys (retired ones included); its origin
    names an organization; that organization's chain verifies from its first event to its head;
    and the chain's event at the checkpoint's ``seq`` has exactly the signed hash. A chain
    rewritten with every hash recomputed passes the third check and fails the last one.
    """
    active = signer()
    try:
        parsed = note_verify(note, active.public_keys())
    except CheckpointError as exc:
        return CheckpointResult(ok=False, organization_id=None, seq=0, reason=str(exc))
    organization_id = active.organization_id(parsed.origin)
    if organization_id is None:
        return CheckpointResult(
            False, None, parsed.seq, f"origin {parsed.origin!r} names no organization here"
        )
    chain = audit_verify_chain(organization_id=organization_id)
    if not chain.ok:
        return CheckpointResult(
            False,
            organization_id,
            parsed.seq,
            f"the chain is broken at seq {chain.first_broken}: {chain.reason}",
        )
    current = (
        AuditEvent.objects.filter(organization_id=organization_id, seq=parsed.seq)
        .values_list("hash", flat=True)
        .first()
    )
    if current is None:
        return CheckpointResult(
            False,
            organization_id,
            parsed.seq,
            f"the chain has {chain.events_checked} events, fewer than the {parsed.seq} the "
            "checkpoint signed: events were removed",
        )
    if current != parsed.hash:
        return CheckpointResult(
            False,
            organization_id,
            parsed.seq,
            f"event seq {parsed.seq} hashes to {current}, the checkpoint signed {parsed.hash}: "
            f"history up to seq {parsed.seq} was rewritten",
        )
    return CheckpointResult(True, organization_id, parsed.seq)
