"""Seed the bench database through the product's services; prints the keys as JSON on stdout.

Run by ``python -m bench`` as ``python -m bench.setup_data AGENTS`` with the bench environment:
one organization, AGENTS agents each with its own key, and one operator (a member) with a
personal key that can answer.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()

    from django.db import connection

    from audit.services import SYSTEM_ACTOR
    from tenants.models import Membership
    from tenants.services import (
        agent_create,
        api_key_create,
        membership_add,
        organization_create,
        user_get_or_create,
    )

    from .views import TABLE_SQL

    agents = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with connection.cursor() as cursor:
        cursor.execute(TABLE_SQL)
    owner = user_get_or_create(email="owner@bench.example")
    organization = organization_create(name="Bench", owner=owner, actor=SYSTEM_ACTOR)
    agent_keys = []
    for n in range(agents):
        agent = agent_create(organization=organization, name=f"agent-{n:03d}", actor=SYSTEM_ACTOR)
        issued = api_key_create(organization=organization, agent=agent, actor=SYSTEM_ACTOR)
        agent_keys.append(issued.plaintext)
    operator = user_get_or_create(email="operator@bench.example")
    membership = membership_add(
        organization=organization,
        user=operator,
        role=Membership.Role.OPERATOR,
        actor=SYSTEM_ACTOR,
    )
    personal = api_key_create(organization=organization, membership=membership, actor=SYSTEM_ACTOR)
    json.dump(
        {
            "organization": organization.slug,
            "agent_keys": agent_keys,
            "operator_key": personal.plaintext,
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
