from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from audit.services import SYSTEM_ACTOR
from tenants.models import Agent, ApiKey, Membership, Organization
from tenants.services import (
    agent_create,
    api_key_create,
    api_key_revoke,
    membership_add,
    organization_create,
    user_get_or_create,
)

DEMO_SLUG = "demo"
OWNER_EMAIL = "owner@demo.awaithuman.local"
OPERATOR_EMAIL = "operator@demo.awaithuman.local"
AGENT_NAME = "support-bot"


def credentials_path() -> Path:
    return Path(settings.DATA_DIR) / ".demo-credentials.json"


class Command(BaseCommand):
    help = (
        "Create (once) the demo organization, its owner and operator, and the demo agent with a "
        "key; print how to sign in and a ready curl. Safe to run again: it reuses what exists."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print the credentials as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        demo = self._ensure()
        if options["json"]:
            self.stdout.write(json.dumps(demo, indent=2))
            return
        base = settings.AWAITHUMAN_BASE_URL
        self.stdout.write(
            f"""
AwaitHuman is running at {base}

  Console (live queue):  {base}/
      operator:          {OPERATOR_EMAIL}
      owner:             {OWNER_EMAIL}
      password (both):   {demo["password"]}
  Django admin:          {base}/admin/  (the owner, scoped to the demo organization, after
                         setting up two-factor at {base}/account/2fa/setup/; every
                         organization: a superuser from `manage.py createsuperuser`)
  API docs:              {base}/api/docs/

  Demo agent key ({AGENT_NAME}):   {demo["agent_key"]}
  Operator personal key:        {demo["operator_key"]}
  (kept in {credentials_path().name}; delete it and re-run seed_demo to issue new keys)

Ask a human (copy and paste):

curl -s {base}/api/v1/escalations \\
  -H "Authorization: Bearer {demo["agent_key"]}" \\
  -H "Content-Type: application/json" \\
  -d '{{"kind": "approval", "title": "Refund $750 to order #1042",
       "action": {{"name": "issue_refund", "arguments": {{"order": 1042, "amount": 750}}}},
       "context": {{"reasoning": "Customer was double-charged; the policy allows refunds."}}}}'
"""
        )

    def _ensure(self) -> dict[str, str]:
        path = credentials_path()
        saved = json.loads(path.read_text()) if path.exists() else {}
        with transaction.atomic():
            organization = Organization.objects.filter(slug=DEMO_SLUG).first()
            password = saved.get("password") or secrets.token_urlsafe(12)
            owner = user_get_or_create(email=OWNER_EMAIL, password=password)
            if owner.is_staff or owner.is_superuser:
                # Earlier demos made the owner a platform superuser, which hid the scoped admin
                # an organization's owner gets; the demo shows that one.
                owner.is_staff = owner.is_superuser = False
                owner.save(update_fields=["is_staff", "is_superuser"])
            if organization is None:
                organization = organization_create(
                    name="Demo Inc.", owner=owner, slug=DEMO_SLUG, actor=SYSTEM_ACTOR
                )
            operator_user = user_get_or_create(email=OPERATOR_EMAIL, password=password)
            operator = Membership.objects.filter(
                organization=organization, user=operator_user
            ).first() or membership_add(
                organization=organization,
                user=operator_user,
                role=Membership.Role.OPERATOR,
                actor=SYSTEM_ACTOR,
            )
            agent = Agent.objects.filter(organization=organization, name=AGENT_NAME).first()
            if agent is None:
                agent = agent_create(
                    organization=organization,
                    name=AGENT_NAME,
                    description="The demo customer-support agent.",
                    actor=SYSTEM_ACTOR,
                )
            agent_key = self._key(saved.get("agent_key"), organization, agent=agent)
            operator_key = self._key(saved.get("operator_key"), organization, membership=operator)
        demo = {
            "base_url": settings.AWAITHUMAN_BASE_URL,
            "organization": organization.slug,
            "owner_email": OWNER_EMAIL,
            "operator_email": OPERATOR_EMAIL,
            "password": password,
            "agent_key": agent_key,
            "operator_key": operator_key,
        }
        path.write_text(json.dumps(demo, indent=2))
        path.chmod(0o600)
        return demo

    def _key(
        self,
        saved: str | None,
        organization: Organization,
        *,
        agent: Agent | None = None,
        membership: Membership | None = None,
    ) -> str:
        """Reuse the saved key while it is still valid; otherwise revoke the demo's old keys and
        issue a new one (only digests are stored, so a lost plaintext cannot be shown again)."""
        keys = ApiKey.objects.filter(
            organization=organization, agent=agent, membership=membership, revoked_at__isnull=True
        )
        if saved and any(key.key_id in saved for key in keys):
            return saved
        for key in keys:
            api_key_revoke(api_key=key, actor=SYSTEM_ACTOR)
        return api_key_create(
            organization=organization,
            actor=SYSTEM_ACTOR,
            agent=agent,
            membership=membership,
            name="demo",
        ).plaintext
