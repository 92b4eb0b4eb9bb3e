"""The queue page with 500 pending escalations: server time per request (median/p95 of 20).

``python -m bench.queue_page [--rows 500] [--requests 20]``

Runs Django's full request handler in-process (middleware, view, template) with a signed-in
operator against PostgreSQL (``awaithuman_bench_queue``, recreated), so the figure is server time
without network or ASGI-server overhead; it also reports the number of queries per request.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from datetime import timedelta

from .queue_fanout import environment, percentile, recreate_database, setup_django


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.queue_page", description=__doc__)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args(argv)

    env = environment(secrets.token_urlsafe(50))
    recreate_database(env)
    setup_django(env)

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from audit.services import SYSTEM_ACTOR
    from escalations.models import Escalation
    from escalations.services import escalation_claim, escalation_create
    from tenants.services import (
        agent_create,
        membership_add,
        organization_create,
        user_get_or_create,
    )

    owner = user_get_or_create(email="owner@page.test", password=None)
    organization = organization_create(name="Page", owner=owner, slug="page", actor=SYSTEM_ACTOR)
    operator = membership_add(
        organization=organization,
        user=user_get_or_create(email="op@page.test", password=None),
        role="operator",
        actor=SYSTEM_ACTOR,
    )
    agent = agent_create(organization=organization, name="page-bot", actor=SYSTEM_ACTOR)
    first = escalation_create(
        organization=organization,
        agent=agent,
        api_key=None,
        data={"kind": "approval", "title": "Seed", "action": {"name": "x", "arguments": {}}},
    )
    escalation_claim(escalation=first, membership=operator)
    now = timezone.now()
    Escalation.objects.bulk_create(
        [
            Escalation(
                public_id=f"esc_page{index:06d}",
                organization=organization,
                agent=agent,
                kind="approval",
                title=f"Refund order #{index} for a customer who was charged twice",
                action={"name": "issue_refund", "arguments": {"order": index}},
                context={"reasoning": "x" * 2000},
                response_schema={"type": "object"},
                priority=["low", "normal", "high", "urgent"][index % 4],
                timeout_seconds=86400,
                on_timeout="reject",
                created_at=now - timedelta(seconds=index),
                expires_at=now + timedelta(days=1),
                assignee=operator if index % 5 == 0 else None,
                claimed_at=now if index % 5 == 0 else None,
            )
            for index in range(args.rows - 1)
        ]
    )

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(operator.user)
    client.get("/")  # warm: templates compiled, connection open
    timings = []
    for _ in range(args.requests):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = client.get("/")
            timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
        assert response.content.count(b'class="qrow"') == args.rows
    print(f"### Queue page ({args.rows} pending escalations, {args.requests} requests)\n")
    print("| server time median | p95 | queries per request | page size |")
    print("|---|---|---|---|")
    print(
        f"| {statistics.median(timings):.1f} ms | {percentile(timings, 0.95):.1f} ms | "
        f"{len(queries)} | {len(response.content) / 1024:.0f} KiB |"
    )
    print("\nTarget: < 200 ms.")


if __name__ == "__main__":
    main()
