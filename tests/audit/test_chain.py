from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import connection, transaction

from audit.models import GENESIS_HASH, AuditEvent, ChainHead
from audit.services import (
    VerifyResult,
    audit_record,
    audit_seal,
    audit_verify_chain,
    event_hash,
)

pytestmark = pytest.mark.django_db

ACME, GLOBEX = 101, 202
ALICE = {"type": "user", "id": "usr_alice", "label": "alice@example.com"}


def test_events_link_into_a_chain_that_verifies(record):
    events = [record(ACME, target=f"esc_{n}", data={"n": n}) for n in range(3)]

    assert [event.seq for event in events] == [1, 2, 3]
    assert events[0].prev_hash == GENESIS_HASH
    assert events[1].prev_hash == events[0].hash
    assert events[2].prev_hash == events[1].hash
    head = ChainHead.objects.get(organization_id=ACME)
    assert (head.seq, head.hash) == (3, events[2].hash)
    assert audit_verify_chain(organization_id=ACME).ok
    assert audit_verify_chain(organization_id=ACME).events_checked == 3


def test_hash_is_sha256_of_prev_hash_seq_and_canonical_json_body(record):
    event = record(ACME, target="esc_1", data={"amount": 750, "note": "café"})

    body = {
        "organization_id": ACME,
        "seq": 1,
        "action": "escalation.created",
        "actor": {"type": "user", "id": "usr_alice", "label": "alice@example.com"},
        "target": "esc_1",
        "data": {"amount": 750, "note": "café"},
        "created_at": event.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(f"{GENESIS_HASH}\n1\n{canonical}".encode()).hexdigest()
    assert event.hash == expected


def test_what_is_hashed_is_what_the_database_gives_back(record):
    tricky = {
        "tuple": (1, 2),
        7: "int key",
        "negative_zero": -0.0,
        "huge_float": 1e20,
        "small_float": 1.5e-10,
        "float": 0.1 + 0.2,
        "big_int": 2**70,
        "unicode": "naïve ☃ \U0001f600",
        "nested": {"b": [None, True, {"z": 1, "a": 2}]},
    }

    event = record(ACME, data=tricky)

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.data == event.data
    assert event_hash(stored) == event.hash
    assert audit_verify_chain(organization_id=ACME).ok


@pytest.mark.parametrize(
    "data",
    [
        {"amount": Decimal("750.00")},
        {"at": datetime(2025, 1, 1, tzinfo=UTC)},
        {"ratio": float("nan")},
        {"ratio": float("inf")},
    ],
    ids=["decimal", "datetime", "nan", "infinity"],
)
def test_data_that_is_not_plain_json_is_refused_at_write_time(record, data):
    with pytest.raises(ValueError, match="must be plain JSON"):
        record(ACME, data=data)

    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": ""}, "action must be 1 to 64 characters"),
        ({"action": "x" * 65}, "action must be 1 to 64 characters"),
        ({"target": "esc_" + "x" * 61}, "target must be at most 64 characters"),
        ({"actor": {"id": "usr_alice"}}, 'actor must be an object with a "type"'),
        ({"data": ["not", "an", "object"]}, "data must be an object"),
    ],
    ids=["empty-action", "long-action", "long-target", "actor-without-type", "list-data"],
)
def test_malformed_events_are_refused(record, kwargs, message):
    with pytest.raises(ValueError, match=message):
        record(ACME, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_audit_record_outside_a_transaction_raises():
    assert not connection.in_atomic_block
    with pytest.raises(RuntimeError, match=r"must run inside transaction\.atomic\(\)"):
        audit_record(organization_id=ACME, action="escalation.created", actor={"type": "system"})


def test_two_organizations_have_independent_chains(record):
    for _ in range(2):
        record(ACME)
        record(GLOBEX)
    record(GLOBEX)

    acme = list(AuditEvent.objects.filter(organization_id=ACME))
    globex = list(AuditEvent.objects.filter(organization_id=GLOBEX))
    assert [event.seq for event in acme] == [1, 2]
    assert [event.seq for event in globex] == [1, 2, 3]
    assert acme[0].prev_hash == globex[0].prev_hash == GENESIS_HASH
    assert acme[1].prev_hash == acme[0].hash
    assert globex[1].prev_hash == globex[0].hash
    assert audit_verify_chain(organization_id=ACME).events_checked == 2
    assert audit_verify_chain(organization_id=GLOBEX).events_checked == 3


def test_a_rolled_back_event_leaves_no_gap(record):
    record(ACME)
    with pytest.raises(ValueError, match="the audited change failed"), transaction.atomic():
        audit_record(organization_id=ACME, action="escalation.created", actor={"type": "system"})
        raise ValueError("the audited change failed")
    event = record(ACME)

    assert event.seq == 2
    assert audit_verify_chain(organization_id=ACME).ok


def test_an_organization_without_events_has_an_empty_intact_chain():
    assert audit_verify_chain(organization_id=ACME) == VerifyResult(ok=True, events_checked=0)


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_of_one_organization_get_gap_free_seqs():
    writers, events_each = 8, 10

    def write(writer: int) -> None:
        try:
            for n in range(events_each):
                with transaction.atomic():
                    audit_record(
                        organization_id=ACME,
                        action="escalation.created",
                        actor={"type": "agent", "id": f"agt_{writer}"},
                        data={"n": n},
                    )
        finally:
            connection.close()

    def seal() -> None:
        try:
            for _ in range(events_each):
                audit_seal(organization_id=ACME)
        finally:
            connection.close()

    # Every sealer starts on an organization without a chain head, so they also race to create
    # it; writers and sealers run at once, as web processes and dispatchers do.
    with ThreadPoolExecutor(max_workers=writers + 2) as pool:
        futures = [pool.submit(write, writer) for writer in range(writers)]
        futures += [pool.submit(seal) for _ in range(2)]
        for future in futures:
            future.result()
    audit_seal()

    seqs = list(
        AuditEvent.objects.filter(organization_id=ACME)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    assert seqs == list(range(1, writers * events_each + 1))
    result = audit_verify_chain(organization_id=ACME)
    assert result.ok, result
    assert result.events_checked == writers * events_each


class TestVerifyNamesTheFirstBrokenEvent:
    def test_when_an_event_was_edited(self, record, triggers_off):
        for _ in range(4):
            record(ACME)
        with triggers_off():
            AuditEvent.objects.filter(organization_id=ACME, seq=2).update(data={"amount": 1})

        result = audit_verify_chain(organization_id=ACME)

        assert (result.ok, result.first_broken, result.events_checked) == (False, 2, 1)
        assert "hash mismatch" in result.reason

    def test_when_an_event_was_deleted(self, record, triggers_off):
        for _ in range(4):
            record(ACME)
        with triggers_off():
            AuditEvent.objects.filter(organization_id=ACME, seq=3).delete()

        result = audit_verify_chain(organization_id=ACME)

        assert (result.ok, result.first_broken) == (False, 3)
        assert result.reason == "missing (the next event is seq 4)"

    def test_when_the_last_events_were_deleted(self, record, triggers_off):
        for _ in range(4):
            record(ACME)
        with triggers_off():
            AuditEvent.objects.filter(organization_id=ACME, seq__gte=3).delete()

        result = audit_verify_chain(organization_id=ACME)

        assert (result.ok, result.first_broken, result.events_checked) == (False, 3, 2)
        assert result.reason == "missing (the chain head is at seq 4)"

    def test_when_the_last_event_was_rewritten_with_a_recomputed_hash(self, record, triggers_off):
        record(ACME)
        last = record(ACME)
        last.data = {"forged": True}
        last.hash = event_hash(last)
        with triggers_off():
            last.save()

        result = audit_verify_chain(organization_id=ACME)

        assert (result.ok, result.first_broken) == (False, 2)
        assert result.reason == "hash does not match the chain head"

    def test_when_an_event_was_inserted_past_the_chain_head(self, record):
        last = record(ACME)
        forged = AuditEvent(
            organization_id=ACME,
            seq=2,
            action="escalation.approved",
            actor={"type": "system"},
            created_at=last.created_at,
            prev_hash=last.hash,
        )
        forged.hash = event_hash(forged)
        forged.save(force_insert=True)

        result = audit_verify_chain(organization_id=ACME)

        assert (result.ok, result.first_broken, result.events_checked) == (False, 2, 1)
        assert result.reason == "not recorded in the chain head"


def test_an_event_is_written_unsealed_and_sealed_after_commit():
    with transaction.atomic():
        event = audit_record(organization_id=ACME, action="member.added", actor={"type": "system"})
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.seq, stored.prev_hash, stored.hash) == (None, None, None)
    # An unsealed event is not part of the chain yet; the chain is intact without it.
    assert audit_verify_chain(organization_id=ACME) == VerifyResult(ok=True, events_checked=0)

    assert audit_seal() == 1

    stored.refresh_from_db()
    assert (stored.seq, stored.prev_hash) == (1, GENESIS_HASH)
    assert stored.hash == event_hash(stored)
    assert audit_verify_chain(organization_id=ACME) == VerifyResult(ok=True, events_checked=1)
    assert audit_seal() == 0


def test_events_are_sealed_in_the_order_they_were_written(record):
    with transaction.atomic():
        for n in range(3):
            audit_record(
                organization_id=ACME, action="escalation.created", actor=ALICE, data={"n": n}
            )
    audit_seal(organization_id=ACME)
    events = AuditEvent.objects.filter(organization_id=ACME).order_by("seq")
    assert [(event.seq, event.data["n"]) for event in events] == [(1, 0), (2, 1), (3, 2)]
