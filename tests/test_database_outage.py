"""A database that cannot be reached answers 503 with Retry-After, never a 500 or a hang."""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit

import httpx
import pytest
from django.db import OperationalError, connection
from django.test import Client
from rest_framework.test import APIClient

from tests.live import production_stack
from tests.proxy import tcp_proxy

pytestmark = pytest.mark.django_db


def _unreachable(execute, sql, params, many, context):
    raise OperationalError("connection to server at 127.0.0.1, port 5432 failed")


def test_api_answers_503_problem_with_retry_after(acme):
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {acme.agent_key}")
    with connection.execute_wrapper(_unreachable):
        response = client.get("/api/v1/escalations")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert response["Retry-After"] == "5"
    assert response.json()["type"].endswith("/unavailable")


def test_console_answers_503_with_retry_after(acme):
    client = Client(raise_request_exception=False)
    client.force_login(acme.members["bob"].user)
    with connection.execute_wrapper(_unreachable):
        response = client.get("/org/members/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"


def test_other_errors_stay_500(acme):
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {acme.agent_key}")

    def broken(execute, sql, params, many, context):
        raise ZeroDivisionError

    with connection.execute_wrapper(broken):
        response = client.get("/api/v1/escalations")
    assert response.status_code == 500


@pytest.mark.services
def test_a_database_outage_gives_fast_503s_and_the_service_recovers(tmp_path):
    database = urlsplit(os.environ.get("DATABASE_URL", ""))
    with (
        tcp_proxy(database.port or 5432) as proxy,
        production_stack(tmp_path, database_port=proxy.port) as stack,
    ):
        org = stack.organization()
        base = stack.daphne()
        headers = {"Authorization": f"Bearer {org['agent_key']}"}
        request = {"kind": "approval", "title": "Delete customer 7"}
        created = httpx.post(f"{base}/api/v1/escalations", json=request, headers=headers)
        assert created.status_code == 201, created.text

        proxy.stop()
        started = time.monotonic()
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503
        assert time.monotonic() - started < 1.5
        assert ready.json()["checks"] == {"database": False, "redis": True}

        started = time.monotonic()
        refused = httpx.post(
            f"{base}/api/v1/escalations", json=request, headers=headers, timeout=30
        )
        assert refused.status_code == 503, refused.text
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert int(refused.headers["Retry-After"]) > 0
        assert time.monotonic() - started < 6

        proxy.start()
        deadline = time.monotonic() + 20
        while httpx.get(f"{base}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, stack.output()
            time.sleep(0.2)
        again = httpx.post(f"{base}/api/v1/escalations", json=request, headers=headers)
        assert again.status_code == 201, again.text
