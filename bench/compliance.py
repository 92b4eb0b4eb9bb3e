"""Compliance costs on PostgreSQL: ``python -m bench.compliance [--quick]``.

(1) Evidence bundle and fine-tuning exports of one organization with 100,000 decided
    escalations (10,000 with ``--quick``), each run by its own ``manage.py`` process; its peak
    RSS is its own high-water mark (``VmHWM``). Memory is flat if the peak barely moves between an
    organization with a tenth of the escalations and the full one, both measured in the same
    run, and stays near the baseline: the same command on an organization with no escalations
    (what the interpreter, Django and the app cost before any row is read).
(2) Checkpoint signing per organization: 200 organizations each get one new event; the periodic
    job (``checkpoints_issue_due``) signs them all. Baseline, in the same run: sealing those
    events (``audit_seal``), the work every new event already costs.

Runs against a scratch database (``awaithuman_bench_compliance``). Writes
``bench/RESULTS-compliance.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATABASE = "awaithuman_bench_compliance"
ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE}"
CHECKPOINT_ORGS = 200
CONTEXT_MESSAGES = 6  # ~1 KB of conversation per escalation


def _prepare_database() -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{DATABASE}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=HERE.parent,
        env={**os.environ, "DATABASE_URL": DATABASE_URL},
        check=True,
    )


def _populate(organization, agent, membership, count: int) -> None:
    """``count`` decided escalations, as the services would leave them: half approved (every
    fifth with edits), the rest rejected with a comment, each with its response and its created
    and decided audit events."""
    from django.db import transaction
    from django.utils import timezone

    from audit.services import audit_batch, audit_record, payload_digest
    from escalations.models import Escalation, Response
    from escalations.redaction import action_digests, optional_digest
    from tenants.ids import new_public_id

    decided_by = membership.as_actor()
    start = timezone.now() - timedelta(days=1)
    for first in range(0, count, 1000):
        escalations, responses = [], []
        for number in range(first, min(count, first + 1000)):
            approved = number % 2 == 0
            edited = {"order": number, "amount": 500} if approved and number % 5 == 0 else None
            created_at = start + timedelta(milliseconds=number)
            escalations.append(
                Escalation(
                    public_id=new_public_id("esc"),
                    organization=organization,
                    agent=agent,
                    kind="approval",
                    status="approved" if approved else "rejected",
                    title=f"Refund order #{number}",
                    action={"name": "issue_refund", "arguments": {"order": number, "amount": 750}},
                    context={
                        "reasoning": "The customer was charged twice for the same order.",
                        "messages": [
                            {"role": "user", "content": f"Message {turn} about order {number}."}
                            for turn in range(CONTEXT_MESSAGES)
                        ],
                    },
                    response_schema={"type": "boolean"},
                    timeout_seconds=3600,
                    on_timeout="reject",
                    created_at=created_at,
                    expires_at=created_at + timedelta(hours=1),
                    decided_at=created_at + timedelta(seconds=30),
                    decided_by=decided_by,
                    decision_response={},
                    decision_comment="" if approved else "Already refunded.",
                    edited_arguments=edited,
                    decision_channel="console",
                )
            )
        with transaction.atomic(), audit_batch():
            Escalation.objects.bulk_create(escalations)
            for escalation in escalations:
                responses.append(
                    Response(
                        public_id=new_public_id("rsp"),
                        escalation=escalation,
                        membership=membership,
                        outcome="approve" if escalation.status == "approved" else "reject",
                        comment=escalation.decision_comment,
                        edited_arguments=escalation.edited_arguments,
                        channel="console",
                    )
                )
                audit_record(
                    organization_id=organization.pk,
                    action="escalation.created",
                    actor=agent.as_actor(),
                    target=escalation.public_id,
                    data={
                        "kind": "approval",
                        "title": escalation.title,
                        "action": action_digests(escalation.action),
                        "context_digest": payload_digest(escalation.context),
                    },
                )
                audit_record(
                    organization_id=organization.pk,
                    action="escalation.decided",
                    actor=decided_by,
                    target=escalation.public_id,
                    data={
                        "outcome": escalation.status,
                        "response": {},
                        "comment": escalation.decision_comment,
                        "edited_arguments_digest": optional_digest(escalation.edited_arguments),
                        "channel": "console",
                    },
                )
            Response.objects.bulk_create(responses)


# Runs a management command, then reports the process's own peak RSS. ``VmHWM`` belongs to the
# process's memory map, which ``exec`` replaces; ``ru_maxrss`` from ``wait4`` would not do: Linux
# carries it across ``exec``, so every child would report at least this driver's size.
_MEASURED = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "awaithuman.settings")
from django.core.management import execute_from_command_line
execute_from_command_line(["manage.py", *sys.argv[1:]])
with open("/proc/self/status") as status:
    print(next(line for line in status if line.startswith("VmHWM")), file=sys.stderr)
"""


def _peak_rss(arguments: list[str]) -> tuple[float, float]:
    """Run ``manage.py *arguments`` in a fresh process; its peak RSS (MiB) and wall time (s)."""
    started = time.perf_counter()
    finished = subprocess.run(
        [sys.executable, "-c", _MEASURED, *arguments],
        cwd=HERE.parent,
        env={**os.environ, "DATABASE_URL": DATABASE_URL},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - started
    peak = next(line for line in finished.stderr.splitlines() if line.startswith("VmHWM"))
    return int(peak.split()[1]) / 1024, elapsed  # kB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    full = 10_000 if args.quick else 100_000
    small = full // 10

    _prepare_database()
    os.environ["DATABASE_URL"] = DATABASE_URL
    os.environ.pop("REDIS_URL", None)
    os.environ["TIMERS_IN_PROCESS"] = "0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "awaithuman.settings")
    sys.path.insert(0, str(HERE.parent))
    import django

    django.setup()
    from django.db import transaction

    from audit.checkpoints import checkpoints_issue_due
    from audit.services import SYSTEM_ACTOR, audit_record, audit_seal
    from tenants.services import agent_create, organization_create, user_get_or_create

    owner = user_get_or_create(email="bench@compliance.test")
    sizes = {"empty": 0, "small": small, "full": full}
    slugs = {}
    setup_started = time.perf_counter()
    for name, count in sizes.items():
        organization = organization_create(
            name=f"Bench {name}", owner=owner, slug=f"bench-{name}", actor=SYSTEM_ACTOR
        )
        agent = agent_create(organization=organization, name="bot", actor=SYSTEM_ACTOR)
        _populate(organization, agent, organization.memberships.get(), count)
        slugs[name] = organization.slug
    audit_seal()
    setup_seconds = time.perf_counter() - setup_started
    print(f"setup: {full + small} escalations in {setup_seconds:.0f} s", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in ("empty", "small", "full"):
            bundle = Path(scratch, f"{name}.zip")
            rss, seconds = _peak_rss(
                ["evidence_bundle", "--org", slugs[name], "--since", "2000-01-01",
                 "--until", "2999-01-01", "--output", str(bundle)]
            )  # fmt: skip
            rows.append(("evidence bundle", name, sizes[name], rss, seconds, bundle.stat().st_size))
            print(rows[-1], flush=True)
            for export_format in ("chat", "preference", "decisions"):
                output = Path(scratch, f"{name}-{export_format}.jsonl")
                rss, seconds = _peak_rss(
                    ["export_decisions", "--org", slugs[name], "--format", export_format,
                     "--output", str(output)]
                )  # fmt: skip
                rows.append(
                    (
                        f"{export_format} export",
                        name,
                        sizes[name],
                        rss,
                        seconds,
                        output.stat().st_size,
                    )
                )
                print(rows[-1], flush=True)

    # (2) Checkpoints: one new event in each of 200 organizations.
    from tenants.models import Organization

    organizations = [
        organization_create(name=f"Org {n}", owner=owner, slug=f"org-{n}", actor=SYSTEM_ACTOR)
        for n in range(CHECKPOINT_ORGS)
    ]
    audit_seal()
    checkpoints_issue_due()  # every chain starts signed
    # Baseline: recording one event per organization, each in its own transaction as a service
    # would (the commit, and the seal that follows it, included).
    started = time.perf_counter()
    for organization in organizations:
        with transaction.atomic():
            audit_record(organization_id=organization.pk, action="bench.tick", actor=SYSTEM_ACTOR)
        audit_seal(organization_id=organization.pk)
    record_seconds = time.perf_counter() - started
    started = time.perf_counter()
    signed = checkpoints_issue_due()
    sign_seconds = time.perf_counter() - started
    assert signed == CHECKPOINT_ORGS, signed
    started = time.perf_counter()
    assert checkpoints_issue_due() == 0
    idle_seconds = time.perf_counter() - started
    total_orgs = Organization.objects.count()

    machine = (
        f"{platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"PostgreSQL on 127.0.0.1; the machine is shared with other work)"
    )
    by = {
        (what, name): (count, rss, seconds, size) for what, name, count, rss, seconds, size in rows
    }
    lines = [
        "# Compliance: evidence bundles, fine-tuning exports, checkpoints",
        "",
        f"Machine: {machine}. Generated by `python -m bench.compliance"
        f"{' --quick' if args.quick else ''}` (part of `make bench`); setup of "
        f"{full + small:,} decided escalations with their responses and 2 audit events each "
        f"took {setup_seconds:.0f} s.",
        "",
        "## Peak memory of a bundle or export, by organization size",
        "",
        *(
            [
                "This is the `--quick` run (10,000 escalations); `make bench` runs the full",
                "100,000 (`python -m bench.compliance`).",
                "",
            ]
            if args.quick
            else []
        ),
        "Each command runs in its own process (`manage.py evidence_bundle` / `export_decisions`,",
        "writing to a file); peak RSS is the process's own high-water mark (`VmHWM`).",
        "Baseline: the same command for an organization with no escalations, in the same run.",
        f"Flat memory means the {full:,} row is close to the {small:,} row: the ratio column.",
        "",
        "| output | escalations | peak RSS | vs baseline (0) | vs a tenth of the rows | "
        "wall time | file size |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for what in ("evidence bundle", "chat export", "preference export", "decisions export"):
        base_rss = by[(what, "empty")][1]
        small_rss = by[(what, "small")][1]
        for name in ("empty", "small", "full"):
            count, rss, seconds, size = by[(what, name)]
            lines.append(
                f"| {what} | {count:,} | {rss:.0f} MiB | ×{rss / base_rss:.2f} | "
                f"{'×%.2f' % (rss / small_rss) if name == 'full' else ''} | {seconds:.1f} s | "
                f"{size / 1e6:.1f} MB |"
            )
    per_org_sign = sign_seconds / CHECKPOINT_ORGS * 1000
    per_org_record = record_seconds / CHECKPOINT_ORGS * 1000
    lines += [
        "",
        "## Checkpoint signing per organization",
        "",
        f"{CHECKPOINT_ORGS} organizations (of {total_orgs} in the database) each record one new",
        "audit event, each in its own transaction and then sealed: the baseline, what any state",
        "change costs. Then the periodic job (`checkpoints_issue_due`) signs each grown chain",
        "(seal check, head and origin reads, Ed25519 signature, one committed INSERT); a second",
        "run with nothing new finds nothing to sign.",
        "",
        "| step | total | per organization | vs recording an event |",
        "|---|---:|---:|---:|",
        f"| record and seal one event per organization (baseline) | {record_seconds * 1000:.0f} ms"
        f" | {per_org_record:.2f} ms | ×1.00 |",
        f"| sign a checkpoint per organization | {sign_seconds * 1000:.0f} ms | "
        f"{per_org_sign:.2f} ms | ×{per_org_sign / per_org_record:.2f} |",
        f"| job run with nothing new | {idle_seconds * 1000:.0f} ms | – | – |",
        "",
        f"At one run a minute, signing every one of {CHECKPOINT_ORGS} busy organizations costs",
        f"{sign_seconds:.2f} s of one worker's minute.",
        "",
    ]
    (HERE / "RESULTS-compliance.md").write_text("\n".join(lines))
    print("\n".join(lines))
    driver_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the bench driver itself: {driver_rss:.0f} MiB")


if __name__ == "__main__":
    main()
