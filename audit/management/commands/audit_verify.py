"""``manage.py audit_verify [--org SLUG] [--checkpoint FILE …]``: recompute the audit hash chains.

Prints one line per organization on stdout (``org <id>: ok, <n> events``). For a broken chain it
names the first broken event on stderr and, after checking the rest, exits with status 1, so a
cron job or monitor can alert on the exit status alone.

``--checkpoint FILE`` (repeatable) checks instead that the current chain extends a signed
checkpoint kept outside the database (``audit.checkpoints``): the signature is ours, the chain
verifies, and its event at the checkpoint's seq has the signed hash. A chain rewritten with every
hash recomputed fails here, naming the seq where it no longer matches.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.checkpoints import audit_verify_checkpoint
from audit.management import organization_id_from_slug
from audit.models import AuditEvent, ChainHead
from audit.services import audit_verify_chain


class Command(BaseCommand):
    help = "Check every organization's audit hash chain (or one's); exit 1 if one is broken."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--org", metavar="SLUG", help="check only this organization's chain")
        parser.add_argument(
            "--checkpoint",
            metavar="FILE",
            action="append",
            default=[],
            help="a signed checkpoint the chain must extend (repeatable)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["checkpoint"]:
            self._verify_checkpoints(options["checkpoint"])
            return
        if options["org"]:
            organization_ids = [organization_id_from_slug(options["org"])]
        else:
            # Heads as well as events: a chain whose events were all removed still has its head.
            organization_ids = sorted(
                set(
                    AuditEvent.objects.order_by("organization_id")
                    .values_list("organization_id", flat=True)
                    .distinct()
                )
                | set(ChainHead.objects.values_list("organization_id", flat=True))
            )

        broken = 0
        for organization_id in organization_ids:
            result = audit_verify_chain(organization_id=organization_id)
            if result.ok:
                self.stdout.write(f"org {organization_id}: ok, {result.events_checked} events")
                continue
            broken += 1
            action = (
                AuditEvent.objects.filter(organization_id=organization_id, seq=result.first_broken)
                .values_list("action", flat=True)
                .first()
            )
            self.stdout.write(f"org {organization_id}: BROKEN at seq {result.first_broken}")
            self.stderr.write(
                f"org {organization_id}: first broken event seq={result.first_broken} "
                f"action={action or '-'}: {result.reason}"
            )
        if broken:
            raise CommandError(
                f"{broken} of {len(organization_ids)} audit chains broken", returncode=1
            )

    def _verify_checkpoints(self, paths: list[str]) -> None:
        failed = 0
        for path in paths:
            try:
                with open(path, encoding="utf-8", newline="") as file:
                    note = file.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"cannot read checkpoint {path}: {exc}") from None
            result = audit_verify_checkpoint(note)
            if result.ok:
                self.stdout.write(
                    f"{path}: ok, org {result.organization_id} extends seq {result.seq}"
                )
                continue
            failed += 1
            self.stdout.write(f"{path}: FAILED at seq {result.seq}")
            self.stderr.write(f"{path}: org {result.organization_id or '-'}: {result.reason}")
        if failed:
            raise CommandError(
                f"{failed} of {len(paths)} checkpoints not extended by the current chain",
                returncode=1,
            )
