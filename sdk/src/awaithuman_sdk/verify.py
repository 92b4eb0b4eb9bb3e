"""``awaithuman-verify bundle.zip``: check an AwaitHuman evidence bundle offline.

Needs only this package and ``cryptography`` (``pip install 'awaithuman-sdk[receipts]'``); no
server, no account, no Django. It checks, reading the ZIP as a stream:

1. the audit events (``audit/events.jsonl``): each hash is recomputed from the event's fields,
   each ``prev_hash`` is the previous event's hash, ``seq`` runs without gaps;
2. the checkpoints (``audit/checkpoints.txt``, C2SP signed notes): each is signed by a key of
   ``jwks.json``, names this organization, and signs the hash the chain has at its seq; the last
   one is the bundle's anchor and signs the last event;
3. the escalations (``escalations.jsonl``): each has its ``escalation.created`` event, whose
   ``context_digest`` is the SHA-256 of the escalation's context and whose ``action`` is its
   action (name, and the digest of its arguments); a decided one has its ``escalation.decided``
   event with the same outcome, comment and edits (their digest). A redacted payload
   (``{"_redacted": "<hex>"}``) is checked by the digest it carries, so redaction keeps a bundle
   verifiable; an approval's receipt (a JWS, EdDSA) is signed by a key of ``jwks.json``, names the
   escalation and organization, and hashes the approved action (its 24-hour expiry is for
   executors, not for auditors, and is not checked).

An audit event's hash, exactly as the server computes it::

    body = {"organization_id", "seq", "action", "actor", "target", "data", "created_at"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    hash = sha256(f"{prev_hash}\\n{seq}\\n".encode() + canonical.encode()).hexdigest()

Prints ``PASS`` and what was checked, or ``FAIL`` and every problem found (naming the event or
escalation), and exits 0 or 1 (2 if the file cannot be read as a bundle).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import io
import json
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

BODY_FIELDS = ("organization_id", "seq", "action", "actor", "target", "data", "created_at")
GENESIS_HASH = "0" * 64
SIGNATURE_PREFIX = "\u2014 "
CHECKPOINT_SEPARATOR = "----\n"
MAX_PROBLEMS = 20
REDACTED = "_redacted"


class BundleError(Exception):
    """The file is not an evidence bundle this verifier can read."""


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def digest(value: Any) -> str:
    """SHA-256 hex of a payload's canonical JSON; a redacted payload (``{"_redacted": hex}``)
    stands for the value it replaced, so its digest is the one it carries."""
    if isinstance(value, dict) and set(value) == {REDACTED}:
        return str(value[REDACTED])
    return hashlib.sha256(canonical_json(value)).hexdigest()


def _recorded_digest(data: dict[str, Any], name: str) -> str | None:
    """What an audit event recorded of payload ``name``: its digest (``<name>_digest``), or the
    payload itself in events written before digests."""
    if f"{name}_digest" in data:
        return data[f"{name}_digest"]
    return None if data.get(name) is None else digest(data[name])


def event_hash(event: dict[str, Any]) -> str:
    body = {name: event[name] for name in BODY_FIELDS}
    prefix = f"{event['prev_hash']}\n{event['seq']}\n".encode("ascii")
    return hashlib.sha256(prefix + canonical_json(body)).hexdigest()


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _ed25519_verify(public_key: bytes, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _note_key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n\x01" + public_key).digest()[:4]


@dataclass
class Checkpoint:
    origin: str
    seq: int
    hash: str
    note: str


def parse_checkpoint(note: str, keys: list[bytes]) -> Checkpoint:
    """A C2SP signed checkpoint, if one of ``keys`` signed it; ``ValueError`` saying why not."""
    text, separator, signatures = note.partition("\n\n")
    lines = text.split("\n")
    if not separator or len(lines) < 3 or not lines[1].isdigit():
        raise ValueError("not a signed checkpoint")
    try:
        root = base64.b64decode(lines[2], validate=True)
    except binascii.Error:
        raise ValueError("the root hash is not base64") from None
    message = (text + "\n").encode("utf-8")
    for line in signatures.rstrip("\n").split("\n"):
        if not line.startswith(SIGNATURE_PREFIX):
            raise ValueError(f"malformed signature line {line[:40]!r}")
        name, _, encoded = line[len(SIGNATURE_PREFIX) :].rpartition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ValueError("a signature is not base64") from None
        for key in keys:
            if _note_key_id(name, key) == raw[:4]:
                if not _ed25519_verify(key, raw[4:], message):
                    raise ValueError(f"the signature of key {name!r} does not verify")
                return Checkpoint(lines[0], int(lines[1]), root.hex(), note)
    raise ValueError("not signed by a key of jwks.json")


def verify_receipt(
    receipt: str, keys: dict[str, bytes], *, escalation_id: str, organization_id: str, action: Any
) -> str:
    """Why the receipt does not prove this approval, or ``""`` if it does."""
    try:
        header_b64, claims_b64, signature_b64 = receipt.split(".")
        header = json.loads(_b64url(header_b64))
        claims = json.loads(_b64url(claims_b64))
        signature = _b64url(signature_b64)
    except (ValueError, binascii.Error):
        return "the receipt is not a compact JWS"
    key = keys.get(header.get("kid", ""))
    if header.get("alg") != "EdDSA" or key is None:
        return "the receipt is not signed with a key of jwks.json"
    if not _ed25519_verify(key, signature, f"{header_b64}.{claims_b64}".encode("ascii")):
        return "the receipt's signature does not verify"
    if claims.get("sub") != escalation_id or claims.get("org") != organization_id:
        return "the receipt names another escalation or organization"
    if claims.get("outcome") != "approved":
        return "the receipt is not for an approval"
    if claims.get("action_hash") != hashlib.sha256(canonical_json(action)).hexdigest():
        return "the receipt's action_hash is not the approved action's"
    return ""


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    events: int = 0
    escalations: int = 0
    receipts: int = 0
    checkpoints: int = 0

    def fail(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    @property
    def ok(self) -> bool:
        return not self.problems


# An escalation's audit event: its seq as the bundle has it (only shown; a bad one has already
# failed the chain check) and its data.
_Recorded = tuple[object, dict[str, Any]]


def _lines(archive: zipfile.ZipFile, name: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with archive.open(name) as raw:
        for number, line in enumerate(io.TextIOWrapper(raw, encoding="utf-8"), start=1):
            if line.strip():
                yield number, json.loads(line)


def verify_bundle(path: str) -> Report:
    report = Report()
    try:
        archive = zipfile.ZipFile(path)
        manifest = json.loads(archive.read("manifest.json"))
        jwks = json.loads(archive.read("jwks.json"))
        notes = archive.read("audit/checkpoints.txt").decode("utf-8")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise BundleError(f"not an evidence bundle: {exc}") from None
    with archive:
        keys = {key["kid"]: _b64url(key["x"]) for key in jwks.get("keys", [])}
        organization_id = manifest["organization"]["id"]
        first_seq, last_seq = manifest["audit"]["first_seq"], manifest["audit"]["last_seq"]

        checkpoints: list[Checkpoint] = []
        for note in [
            manifest["audit"]["checkpoint"],
            *filter(None, notes.split(CHECKPOINT_SEPARATOR)),
        ]:
            try:
                checkpoint = parse_checkpoint(note, list(keys.values()))
            except ValueError as exc:
                report.fail(f"checkpoint {note.splitlines()[1:2]}: {exc}")
                continue
            if not checkpoint.origin.endswith(f"/audit/{organization_id}"):
                report.fail(f"checkpoint at seq {checkpoint.seq} is for {checkpoint.origin}")
            checkpoints.append(checkpoint)
        if checkpoints and checkpoints[0].seq != last_seq:
            report.fail(f"the anchor checkpoint signs seq {checkpoints[0].seq}, not {last_seq}")
        wanted = {checkpoint.seq: checkpoint for checkpoint in checkpoints}

        created: dict[str, _Recorded] = {}
        decided: dict[str, _Recorded] = {}
        expected_seq, prev_hash = first_seq, None
        for number, event in _lines(archive, "audit/events.jsonl"):
            seq, action = event.get("seq"), event.get("action")
            where = f"audit event seq {seq} ({action})"
            if seq != expected_seq:
                report.fail(f"{where}: expected seq {expected_seq} (line {number})")
            if prev_hash is not None and event.get("prev_hash") != prev_hash:
                report.fail(f"{where}: prev_hash is not the previous event's hash")
            if event_hash(event) != event.get("hash"):
                report.fail(f"{where}: hash mismatch: the event was changed")
            if seq in wanted and wanted[seq].hash != event.get("hash"):
                report.fail(f"{where}: not the hash the checkpoint at seq {seq} signed")
            if action == "escalation.created":
                created[event["target"]] = (seq, event["data"])
            elif action == "escalation.decided":
                decided[event["target"]] = (seq, event["data"])
            expected_seq, prev_hash = expected_seq + 1, event.get("hash")
            report.events += 1
        if expected_seq - 1 != last_seq:
            report.fail(f"the events end at seq {expected_seq - 1}, the checkpoint at {last_seq}")
        report.checkpoints = len(wanted)

        for _, escalation in _lines(archive, "escalations.jsonl"):
            _check_escalation(escalation, created, decided, keys, organization_id, report)
    return report


def _check_escalation(
    escalation: dict[str, Any],
    created: dict[str, _Recorded],
    decided: dict[str, _Recorded],
    keys: dict[str, bytes],
    organization_id: str,
    report: Report,
) -> None:
    report.escalations += 1
    escalation_id = escalation["id"]
    if escalation_id not in created:
        report.fail(f"escalation {escalation_id}: no escalation.created event in the bundle")
        return
    seq, data = created[escalation_id]
    where = f"escalation {escalation_id} (audit event seq {seq}, escalation.created)"
    if "context_digest" not in data:
        report.notes.append(f"{where}: recorded before context digests; context not covered")
    elif data["context_digest"] != digest(escalation["context"]):
        report.fail(f"{where}: the context does not match the digest the event recorded")
    action, recorded_action = escalation.get("action"), data.get("action")
    if (action is None) != (recorded_action is None) or (
        action is not None
        and recorded_action is not None
        and (
            action.get("name") != recorded_action.get("name")
            or digest(action.get("arguments") or {})
            != _recorded_digest(recorded_action, "arguments")
        )
    ):
        report.fail(f"{where}: the action is not the one the event recorded")
    decision = escalation.get("decision")
    if decision is None:
        return
    if escalation_id not in decided:
        report.fail(f"escalation {escalation_id}: decided, but no escalation.decided event")
        return
    seq, data = decided[escalation_id]
    where = f"escalation {escalation_id} (audit event seq {seq}, escalation.decided)"
    for name in ("outcome", "comment"):
        if canonical_json(decision.get(name)) != canonical_json(data.get(name)):
            report.fail(f"{where}: the {name} is not the one the event recorded")
    edits = decision.get("edited_arguments")
    if (None if edits is None else digest(edits)) != _recorded_digest(data, "edited_arguments"):
        report.fail(f"{where}: the edited_arguments are not the ones the event recorded")
    if decision.get("outcome") != "approved" or not action:
        return
    if escalation.get("redacted_at"):
        report.notes.append(f"escalation {escalation_id}: payloads redacted; no receipt to check")
        return
    approved = {
        "name": action["name"],
        "arguments": edits if edits is not None else action.get("arguments") or {},
    }
    if canonical_json(decision.get("approved_action")) != canonical_json(approved):
        report.fail(f"{where}: approved_action is not the action with the edits applied")
    receipt = decision.get("receipt")
    problem = (
        verify_receipt(
            receipt,
            keys,
            escalation_id=escalation_id,
            organization_id=organization_id,
            action=approved,
        )
        if receipt
        else "no receipt"
    )
    if problem:
        report.fail(f"escalation {escalation_id}: {problem}")
    else:
        report.receipts += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="awaithuman-verify", description="Check an AwaitHuman evidence bundle offline."
    )
    parser.add_argument("bundle", help="the evidence bundle (.zip)")
    args = parser.parse_args(argv)
    try:
        report = verify_bundle(args.bundle)
    except BundleError as exc:
        print(f"FAIL: {exc}")
        return 2
    for note in report.notes[:MAX_PROBLEMS]:
        print(f"note: {note}")
    if report.ok:
        print(
            f"PASS: {report.events} audit events, {report.checkpoints} signed checkpoints, "
            f"{report.escalations} escalations, {report.receipts} receipts verified"
        )
        return 0
    print("FAIL:")
    for problem in report.problems:
        print(f"  {problem}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
