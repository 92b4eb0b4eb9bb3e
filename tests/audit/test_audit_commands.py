"""``audit_verify`` and ``audit_export``, driven as an operator or a cron job would."""

from __future__ import annotations

import hashlib
import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from audit.models import AuditEvent
from tenants.models import Organization

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    return Organization.objects.create(name="Acme", slug="acme")


@pytest.fixture
def globex():
    return Organization.objects.create(name="Globex", slug="globex")


def run(*args: str) -> tuple[str, str]:
    stdout, stderr = StringIO(), StringIO()
    call_command(*args, stdout=stdout, stderr=stderr)
    return stdout.getvalue(), stderr.getvalue()


def test_audit_verify_passes_on_clean_chains(record, acme, globex):
    for _ in range(3):
        record(acme.pk)
    record(globex.pk)

    stdout, stderr = run("audit_verify")

    assert stdout.splitlines() == sorted(
        [f"org {acme.pk}: ok, 3 events", f"org {globex.pk}: ok, 1 events"]
    )
    assert stderr == ""


def test_audit_verify_exits_1_and_names_the_first_broken_event(record, triggers_off, acme, globex):
    record(acme.pk)
    record(acme.pk, action="escalation.approved", data={"amount": 750})
    record(acme.pk)
    record(globex.pk)
    with triggers_off(), connection.cursor() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET data = %s WHERE organization_id = %s AND seq = 2",
            [json.dumps({"amount": 75000}), acme.pk],
        )

    stdout, stderr = StringIO(), StringIO()
    with pytest.raises(CommandError) as excinfo:
        call_command("audit_verify", stdout=stdout, stderr=stderr)

    assert excinfo.value.returncode == 1
    assert f"org {acme.pk}: BROKEN at seq 2" in stdout.getvalue()
    assert f"org {globex.pk}: ok, 1 events" in stdout.getvalue()
    assert stderr.getvalue() == (
        f"org {acme.pk}: first broken event seq=2 action=escalation.approved: "
        "hash mismatch: the event changed after it was written\n"
    )


def test_audit_verify_checks_only_the_named_organization(record, triggers_off, acme, globex):
    record(acme.pk)
    record(globex.pk)
    with triggers_off():
        AuditEvent.objects.filter(organization_id=globex.pk).update(target="esc_forged")

    stdout, _ = run("audit_verify", "--org", "acme")

    assert stdout == f"org {acme.pk}: ok, 1 events\n"


def test_audit_verify_refuses_an_unknown_organization(acme):
    with pytest.raises(CommandError, match="no organization with slug 'initech'"):
        run("audit_verify", "--org", "initech")


def test_audit_export_lets_an_auditor_recompute_the_chain_offline(record, acme, globex):
    record(acme.pk, target="esc_1", data={"amount": 750, "note": "café"})
    record(acme.pk, actor={"type": "system"})
    record(globex.pk)

    stdout, _ = run("audit_export", "--org", "acme")

    lines = [json.loads(line) for line in stdout.splitlines()]
    assert [line["seq"] for line in lines] == [1, 2]
    prev_hash = "0" * 64
    for line in lines:
        body = {key: line[key] for key in line if key not in ("prev_hash", "hash")}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert line["prev_hash"] == prev_hash
        assert (
            line["hash"]
            == hashlib.sha256(f"{prev_hash}\n{line['seq']}\n{canonical}".encode()).hexdigest()
        )
        prev_hash = line["hash"]
    assert set(lines[0]) == {
        "organization_id",
        "seq",
        "action",
        "actor",
        "target",
        "data",
        "created_at",
        "prev_hash",
        "hash",
    }


def test_audit_export_since_writes_only_the_events_after_that_seq(record, acme):
    events = [record(acme.pk) for _ in range(3)]

    stdout, _ = run("audit_export", "--org", "acme", "--since", "2")

    (line,) = [json.loads(line) for line in stdout.splitlines()]
    assert (line["seq"], line["prev_hash"], line["hash"]) == (3, events[1].hash, events[2].hash)
