"""``manage.py evidence_bundle --org SLUG --since DATE --until DATE --output FILE``.

Writes the organization's evidence bundle (``escalations.bundles``) for the escalations created
in ``[since, until)``: a ZIP an auditor checks with ``awaithuman-verify FILE``. Prints the number
of bytes written.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from escalations import bundles
from escalations.exports import ExportError
from tenants.models import Organization


class Command(BaseCommand):
    help = "Write an organization's evidence bundle (ZIP) for a date range."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", metavar="SLUG", required=True)
        parser.add_argument("--since", required=True, help="ISO date or date-time (inclusive)")
        parser.add_argument("--until", required=True, help="ISO date or date-time (exclusive)")
        parser.add_argument("--output", metavar="FILE", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"no organization with slug {options['org']!r}")
        try:
            since, until = bundles.bundle_range(
                {"since": options["since"], "until": options["until"]}
            )
        except ExportError as exc:
            raise CommandError(str(exc)) from None
        written = 0
        with open(options["output"], "wb") as output:
            for chunk in bundles.bundle_stream(organization=organization, since=since, until=until):
                output.write(chunk)
                written += len(chunk)
        self.stdout.write(str(written))
