from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from audit.services import SYSTEM_ACTOR
from tenants.models import Agent, ApiKey, Membership, Organization
from tenants.services import agent_create, api_key_create


class Command(BaseCommand):
    help = (
        "Issue an API key for an agent (created if new) or a member's personal key. "
        "Prints the key and nothing else: it is shown this once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--org", required=True, help="The organization's slug.")
        owner = parser.add_mutually_exclusive_group(required=True)
        owner.add_argument("--agent", help="Agent name (created if it does not exist).")
        owner.add_argument("--user", help="A member's e-mail: issues a personal key.")
        parser.add_argument("--scopes", help="Comma-separated scopes (default: all allowed).")
        parser.add_argument("--expires-in-days", type=int, help="Expire the key after N days.")
        parser.add_argument("--test", action="store_true", help="Issue an ahk_test_ key.")
        parser.add_argument("--name", default="", help="A label for the key.")

    # One transaction: a refused key must not leave behind the agent created for it.
    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        organization = Organization.objects.filter(slug=options["org"]).first()
        if organization is None:
            raise CommandError(f"--org: no organization with slug {options['org']!r}")
        agent = membership = None
        if options["agent"]:
            agent = Agent.objects.filter(organization=organization, name=options["agent"]).first()
            if agent is None:
                agent = agent_create(
                    organization=organization, name=options["agent"], actor=SYSTEM_ACTOR
                )
        else:
            membership = (
                Membership.objects.select_related("user")
                .filter(organization=organization, user__email__iexact=options["user"])
                .first()
            )
            if membership is None:
                raise CommandError(
                    f"--user: {options['user']!r} is not a member of {organization.slug}"
                )
        scopes = None
        if options["scopes"]:
            scopes = [scope.strip() for scope in options["scopes"].split(",") if scope.strip()]
        try:
            issued = api_key_create(
                organization=organization,
                actor=SYSTEM_ACTOR,
                agent=agent,
                membership=membership,
                scopes=scopes,
                name=options["name"],
                mode=ApiKey.Mode.TEST if options["test"] else ApiKey.Mode.LIVE,
                expires_in_days=options["expires_in_days"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(issued.plaintext)
