"""``manage.py audit_checkpoint [--org SLUG]``: sign audit checkpoints now.

With ``--org``: signs that organization's chain head (or finds the checkpoint already signed at
it) and prints the signed note on stdout, ready to be kept outside our database. Without:
signs every chain that grew since its last checkpoint, as the periodic job does, and prints how
many were signed.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from audit.checkpoints import CheckpointError, checkpoint_issue, checkpoints_issue_due
from audit.management import organization_id_from_slug


class Command(BaseCommand):
    help = "Sign a checkpoint of an organization's audit chain (or of every chain that grew)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--org", metavar="SLUG", help="sign this organization's chain head")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["org"]:
            self.stdout.write(f"{checkpoints_issue_due()} checkpoints signed")
            return
        try:
            checkpoint, _ = checkpoint_issue(
                organization_id=organization_id_from_slug(options["org"])
            )
        except CheckpointError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(checkpoint.note, ending="")
