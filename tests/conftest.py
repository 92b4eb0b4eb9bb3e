"""Shared fixtures: personas in two organizations, their keys, and an API client per key.

Acme has alice (owner), bob (operator) and vera (viewer), an agent ``support-bot`` with a key and
each person's personal key. Globex is another tenant, with charlie (admin) and its own agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connections
from rest_framework.test import APIClient

from audit import triggers
from audit.services import SYSTEM_ACTOR
from tenants.models import Membership, Organization
from tenants.services import (
    agent_create,
    api_key_create,
    membership_add,
    organization_create,
    user_get_or_create,
)


def pytest_configure() -> None:
    from django.conf import settings

    # Tests drive the timers themselves; no background thread ticks the test database.
    settings.TIMERS_IN_PROCESS = False
    # Personas get passwords; the production hasher's cost would dominate the suite's time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # No connection pool in the test process: tests start plain threads (races, bursts) whose
    # connections never go back to a pool, and a pool of 20 would run dry mid-suite. The pool is
    # still exercised where it matters: the real servers of tests/live.py run with it.
    settings.DATABASES["default"].get("OPTIONS", {}).pop("pool", None)
    # Tasks run in the test process (as in the embedded default) even when REDIS_URL is set:
    # nothing else would consume them. Tests of real workers start their own (tests/live.py).
    from awaithuman.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True


@pytest.fixture(scope="session", autouse=True)
def _end_stray_sessions(django_db_setup: Any, django_db_blocker: Any) -> Iterator[None]:
    """Async tests touch the database from asgiref's worker threads, whose connections outlive
    the test; end those sessions before pytest-django drops the test database (PostgreSQL refuses
    to drop a database that has sessions)."""
    yield
    for connection in connections.all():
        if connection.vendor != "postgresql":
            continue
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture(autouse=True)
def _append_only_audit_survives_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """Transactional tests end with a flush that TRUNCATEs every table; the audit table refuses
    that by design, so lift its triggers for the flush only, and put them back afterwards."""
    marker = request.node.get_closest_marker("django_db")
    transactional = (marker is not None and marker.kwargs.get("transaction")) or any(
        name in request.fixturenames for name in ("transactional_db", "live_server")
    )
    if not transactional:
        yield
        return
    request.getfixturevalue("transactional_db")
    for connection in connections.all():
        triggers.install(connection)
    yield
    for connection in connections.all():
        triggers.uninstall(connection)


def api_client(key: str | None) -> APIClient:
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@dataclass
class Tenant:
    organization: Organization
    members: dict[str, Membership]
    agent_key: str
    personal_keys: dict[str, str]

    def agent_client(self) -> APIClient:
        return api_client(self.agent_key)

    def client_for(self, name: str) -> APIClient:
        return api_client(self.personal_keys[name])


def make_tenant(name: str, slug: str, people: dict[str, str], agent_name: str) -> Tenant:
    owner_name = next(person for person, role in people.items() if role == "owner")
    owner = user_get_or_create(email=f"{owner_name}@{slug}.test", password="correct-horse-42")
    organization = organization_create(name=name, owner=owner, slug=slug, actor=SYSTEM_ACTOR)
    members = {owner_name: organization.memberships.get(user=owner)}
    for person, role in people.items():
        if person == owner_name:
            continue
        user = user_get_or_create(email=f"{person}@{slug}.test", password="correct-horse-42")
        members[person] = membership_add(
            organization=organization, user=user, role=role, actor=SYSTEM_ACTOR
        )
    agent = agent_create(organization=organization, name=agent_name, actor=SYSTEM_ACTOR)
    agent_key = api_key_create(organization=organization, agent=agent, actor=SYSTEM_ACTOR)
    personal_keys = {
        person: api_key_create(
            organization=organization, membership=membership, actor=SYSTEM_ACTOR
        ).plaintext
        for person, membership in members.items()
    }
    return Tenant(organization, members, agent_key.plaintext, personal_keys)


@pytest.fixture
def acme(db: Any) -> Tenant:
    return make_tenant(
        "Acme", "acme", {"alice": "owner", "bob": "operator", "vera": "viewer"}, "support-bot"
    )


@pytest.fixture
def globex(db: Any) -> Tenant:
    return make_tenant("Globex", "globex", {"charlie": "owner", "dana": "operator"}, "globex-bot")


APPROVAL = {
    "kind": "approval",
    "title": "Refund $750 to order #1042",
    "action": {"name": "issue_refund", "arguments": {"order": 1042, "amount": 750}},
    "context": {
        "reasoning": "The customer was charged twice.",
        "tool_calls": [{"name": "lookup_order", "arguments": {"order": 1042}}],
        "messages": [{"role": "user", "content": "I was charged twice!"}],
    },
}


def create_escalation(tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    response = tenant.agent_client().post(
        "/api/v1/escalations", {**APPROVAL, **overrides}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()
