"""``receipt_keys rotate`` (prints the new kid) and ``receipt_keys list`` (one key a line)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from escalations.models import ReceiptSigningKey
from escalations.receipts import published_keys, signing_key_rotate


class Command(BaseCommand):
    help = (
        "Manage the Ed25519 keys that sign decision receipts. 'rotate' makes a new active key "
        "(the old one stays in /.well-known/jwks.json for the grace period) and prints its kid; "
        "'list' prints each key: kid, state (active | published | retired), created, retired."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        actions = parser.add_subparsers(dest="action", required=True)
        actions.add_parser("rotate", help="Make a new signing key and retire the active one.")
        actions.add_parser("list", help="List the signing keys, newest first.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "rotate":
            self.stdout.write(signing_key_rotate().kid)
            return
        published = {key.pk for key in published_keys()}
        for key in ReceiptSigningKey.objects.all():
            if key.active:
                state = "active"
            elif key.pk in published:
                state = "published"
            else:
                state = "retired"
            retired = key.retired_at.isoformat() if key.retired_at else "-"
            self.stdout.write(f"{key.kid}  {state:<9}  {key.created_at.isoformat()}  {retired}")
