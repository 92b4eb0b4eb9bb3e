"""``manage.py audit_verify [--org SLUG]``: recompute the audit hash chains.

Prints one line per organization on stdout (``org <id>: ok, <n> events``). For a broken chain it
names the first broken event on stderr and, after checking the rest, exits with status 1, so a
cron job or monitor can alert on the exit status alone.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.management import organization_id_from_slug
from audit.models import AuditEvent, ChainHead
from audit.services import audit_verify_chain


class Command(BaseCommand):
    help = "Check every organization's audit hash chain (or one's); exit 1 if one is broken."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--org", metavar="SLUG", help="check only this organization's chain")

    def handle(self, *args: Any, **options: Any) -> None:
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
