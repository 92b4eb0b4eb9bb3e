"""``manage.py export_decisions --org SLUG --format chat|preference|decisions [filters]``.

Writes the organization's decisions as JSON Lines on stdout (or ``--output FILE``), streamed:
``chat`` and ``preference`` are OpenAI fine-tuning files, ``decisions`` is for other tooling
(``escalations.exports``, docs/exports.md). Filters: ``--agent agt_…``, ``--action NAME``,
``--outcome approved|rejected|…``, ``--since`` / ``--until`` (ISO date or date-time, on the
decision time).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from escalations import exports
from tenants.models import Organization


class Command(BaseCommand):
    help = "Export an organization's decisions as JSON Lines (OpenAI chat, preference, or plain)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", metavar="SLUG", required=True)
        parser.add_argument("--format", required=True, choices=exports.FORMATS)
        parser.add_argument("--output", metavar="FILE", help="write here instead of stdout")
        for name in exports.FILTERS:
            parser.add_argument(f"--{name}")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"no organization with slug {options['org']!r}")
        try:
            filters = exports.ExportFilters.parse(
                {name: options[name] for name in exports.FILTERS if options[name] is not None}
            )
        except exports.ExportError as exc:
            raise CommandError(str(exc)) from None
        lines = exports.export_lines(
            organization=organization, export_format=options["format"], filters=filters
        )
        if options["output"]:
            with open(options["output"], "wb") as output:
                output.writelines(lines)
            return
        for line in lines:
            self.stdout.write(line.decode(), ending="")
