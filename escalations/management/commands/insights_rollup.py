"""``insights_rollup [--since YYYY-MM-DD]``: roll up finished days of decisions for the insights.

Without ``--since``, what the periodic job does (the days of the last 90 not rolled up yet, and
the last two again); with it, every finished day from that date, e.g. after restoring a backup
or to pick up decisions stamped on an older day after it was rolled up.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from escalations.rollup import insights_rollup


class Command(BaseCommand):
    help = (
        "Pre-aggregate finished UTC days of decisions for the insights' charts. Without --since, "
        "the days due (as the periodic job); with --since, every finished day from that date."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", help="First day to (re)compute, YYYY-MM-DD (UTC).")

    def handle(self, *args: Any, **options: Any) -> None:
        since = None
        if options["since"]:
            try:
                since = date.fromisoformat(options["since"])
            except ValueError as error:
                raise CommandError(f"--since: {error}; give a date as YYYY-MM-DD") from error
        started = time.perf_counter()
        days = insights_rollup(since=since)
        elapsed = time.perf_counter() - started
        self.stdout.write(f"rolled up {days} day{'s' if days != 1 else ''} in {elapsed:.1f} s")
