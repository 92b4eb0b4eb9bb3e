"""CPU per call of the product's hot paths, in one process, no server: explains the figures.

Run by ``python -m bench`` (scenario ``cpu``) as ``python -m bench.cpu_cost`` with the bench
environment, pinned to the server's CPU. Prints JSON: wall and CPU milliseconds per call of
``POST /api/v1/escalations`` and the bare ``/bench/insert`` (Django's test client, the same
middleware and views), and of the wait consumer's two synchronous steps, ``wait_open``
(authenticate + rate limit + read) and ``wait_read`` (the re-read after a wake), which the
consumer runs through ``database_sync_to_async`` — one shared thread per process.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _measure(fn, count: int = 300, warmup: int = 30) -> dict:
    for _ in range(warmup):
        fn()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(count):
        fn()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"wall_ms": wall / count * 1e3, "cpu_ms": cpu / count * 1e3}


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from audit.services import SYSTEM_ACTOR
    from escalations.consumers import wait_open, wait_read
    from escalations.models import Escalation
    from tenants.models import Agent, Organization
    from tenants.services import api_key_create

    from .waiters import ESCALATION

    organization = Organization.objects.get(name="Bench")
    agent = Agent.objects.filter(organization=organization).first()
    key = api_key_create(organization=organization, agent=agent, actor=SYSTEM_ACTOR).plaintext
    body = json.dumps(ESCALATION)
    http = Client()
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}", "HTTP_HOST": "127.0.0.1"}

    def create() -> None:
        response = http.post("/api/v1/escalations", body, content_type="application/json", **auth)
        assert response.status_code == 201, response.content

    def insert() -> None:
        response = http.post(
            "/bench/insert", body, content_type="application/json", HTTP_HOST="127.0.0.1"
        )
        assert response.status_code == 201

    def healthz() -> None:
        assert http.get("/healthz", HTTP_HOST="127.0.0.1").status_code == 200

    create()
    public_id = Escalation.objects.filter(status="pending").latest("id").public_id
    with CaptureQueriesContext(connection) as queries:
        create()
    create_queries = len(queries.captured_queries)
    with CaptureQueriesContext(connection) as queries:
        wait_open(key, public_id)
    open_queries = len(queries.captured_queries)
    result = {
        "create": _measure(create) | {"queries": create_queries},
        "bare_insert": _measure(insert),
        "healthz": _measure(healthz),
        "wait_open": _measure(lambda: wait_open(key, public_id)) | {"queries": open_queries},
        "wait_read": _measure(lambda: wait_read(organization.pk, public_id)) | {"queries": 1},
    }
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
