"""``manage.py audit_export --org SLUG [--since SEQ]``: an organization's audit trail as JSON Lines.

One event per line in ``seq`` order, with every field the hash covers (``created_at`` in the exact
string form that is hashed) plus ``prev_hash`` and ``hash``, so an auditor can recompute the chain
offline from ``audit.services``' definition alone. ``--since`` exports the events after a seq
already held; the first exported ``prev_hash`` ties them to it.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from audit.management import organization_id_from_slug
from audit.models import AuditEvent
from audit.services import event_body


class Command(BaseCommand):
    help = "Write an organization's audit events as JSON Lines, with their hashes."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--org", metavar="SLUG", required=True)
        parser.add_argument(
            "--since",
            metavar="SEQ",
            type=int,
            default=0,
            help="only events after this seq (the last one you already have)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        events = AuditEvent.objects.filter(
            organization_id=organization_id_from_slug(options["org"]), seq__gt=options["since"]
        ).order_by("seq")
        for event in events.iterator(chunk_size=2000):
            line = {**event_body(event), "prev_hash": event.prev_hash, "hash": event.hash}
            self.stdout.write(json.dumps(line, sort_keys=True))
