from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.core.validators import validate_email
from django.db import transaction

from audit.services import SYSTEM_ACTOR
from tenants.models import Organization
from tenants.services import organization_create, user_get_or_create


class Command(BaseCommand):
    help = "Create an organization and its owner; prints the organization's slug."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--owner", required=True, help="The owner's e-mail address.")
        parser.add_argument("--password", help="Set the owner's password (else unusable).")
        parser.add_argument("--slug", help="URL slug (default: derived from the name).")

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        try:
            validate_email(options["owner"])
        except ValidationError:
            raise CommandError(f"--owner: {options['owner']!r} is not an e-mail address") from None
        slug = options["slug"]
        if slug:
            try:
                Organization._meta.get_field("slug").run_validators(slug)
            except ValidationError as exc:
                raise CommandError(f"--slug: {slug!r}: {' '.join(exc.messages)}") from None
        if slug and Organization.objects.filter(slug=slug).exists():
            raise CommandError(f"--slug: an organization with slug {slug!r} already exists")
        owner = user_get_or_create(email=options["owner"], password=options["password"])
        organization = organization_create(
            name=options["name"], owner=owner, slug=slug, actor=SYSTEM_ACTOR
        )
        self.stdout.write(organization.slug)
