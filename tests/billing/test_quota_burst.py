"""A burst of creates against the last units of the quota: exactly the quota gets through.

The counter's conditional UPDATE is the whole mechanism; these tests run it with real
concurrency (threads, each with its own database connection). SQLite serialises writers on its
file lock; the PostgreSQL run (``DATABASE_URL=postgres://…``) shows the row lock and re-check.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from tenants import billing
from tenants.models import UsagePeriod
from tests.conftest import APPROVAL, api_client, make_tenant
from tests.live import services_required


def _burst(*, creates: int, left: int, workers: int) -> tuple[Counter[int], Any]:
    acme = make_tenant("Acme", "acme", {"alice": "owner"}, "support-bot")
    UsagePeriod.objects.create(
        organization=acme.organization,
        period_start=billing.period_start_for(timezone.now()),
        escalations=billing.FREE.escalations_per_month - left,
    )
    barrier = threading.Barrier(min(workers, creates))

    def create(n: int) -> int:
        try:
            if n < workers:
                barrier.wait()
            response = api_client(acme.agent_key).post(
                "/api/v1/escalations", {**APPROVAL, "external_id": f"run-{n}"}, format="json"
            )
            if response.status_code == 402:
                assert response.json()["limit"] == "escalations_per_month"
            return response.status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=workers) as pool:
        statuses = Counter(pool.map(create, range(creates)))
    return statuses, acme


def _check(statuses: Counter[int], acme: Any, *, creates: int, left: int) -> None:
    assert statuses == Counter({201: left, 402: creates - left}), statuses
    assert acme.organization.escalations.count() == left
    assert billing.escalations_this_month(acme.organization) == billing.FREE.escalations_per_month


@pytest.mark.django_db(transaction=True)
def test_a_burst_gets_exactly_the_quota_through(billing_on: Any, settings: Any) -> None:
    settings.RATE_LIMIT_DEFAULT = 10_000
    statuses, acme = _burst(creates=40, left=25, workers=8)
    _check(statuses, acme, creates=40, left=25)


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_300_concurrent_creates_against_250_left_on_postgresql(
    billing_on: Any, settings: Any
) -> None:
    if connection.vendor != "postgresql":
        message = "the 300-thread burst needs PostgreSQL (DATABASE_URL=postgres://…)"
        if services_required() or os.environ.get("DATABASE_URL", "").startswith("postgres"):
            pytest.fail(message)
        pytest.skip(message)
    settings.RATE_LIMIT_DEFAULT = 10_000
    # 50 threads at once (each its own PostgreSQL connection, well under max_connections = 100),
    # with all 300 creates queued behind them.
    statuses, acme = _burst(creates=300, left=250, workers=50)
    _check(statuses, acme, creates=300, left=250)
