"""A database that cannot be reached answers 503 with Retry-After, never a 500 or a hang."""

from __future__ import annotations

import os
import re
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

        # The long-poll, served ahead of Django, says the same rather than failing or hanging.
        waited = httpx.get(
            f"{base}/api/v1/escalations/{created.json()['id']}/wait?timeout=1",
            headers=headers,
            timeout=30,
        )
        assert waited.status_code == 503, waited.text
        assert waited.headers["Content-Type"] == "application/problem+json"
        assert int(waited.headers["Retry-After"]) > 0

        proxy.start()
        deadline = time.monotonic() + 20
        while httpx.get(f"{base}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, stack.output()
            time.sleep(0.2)
        again = httpx.post(f"{base}/api/v1/escalations", json=request, headers=headers)
        assert again.status_code == 201, again.text


@pytest.mark.services
def test_a_create_committed_while_its_client_got_an_error_comes_back_on_the_sdks_retry(tmp_path):
    """The database commits the escalation, then the connection drops before Django hears the
    commit: the agent gets a 503, the SDK retries with the same Idempotency-Key and receives the
    escalation that was committed — one row, never two."""
    from awaithuman_sdk import AwaitHuman

    database = urlsplit(os.environ.get("DATABASE_URL", ""))
    with (
        tcp_proxy(database.port or 5432) as proxy,
        production_stack(tmp_path, database_port=proxy.port) as stack,
    ):
        org = stack.organization()
        base = stack.daphne()
        # The request's second COMMIT is the escalation's (the first reserves the key).
        proxy.lose_reply(b"COMMIT", nth=2)
        with AwaitHuman(api_key=org["agent_key"], base_url=base, max_retries=3) as client:
            escalation = client.create(
                kind="approval", title="Delete customer 7", idempotency_key="run-42-step-3"
            )
        assert proxy.lost.is_set(), "the commit's answer was never lost"
        rows = stack.manage(
            "shell",
            "-c",
            "from escalations.models import Escalation; "
            "print(list(Escalation.objects.values_list('public_id', flat=True)))",
        )
        assert rows.splitlines()[-1] == repr([escalation.id])
        access_log = next(log for log in stack.logs if log.name.startswith("daphne"))
        answers = re.findall(r'"POST /api/v1/escalations" (\d{3})', access_log.read_text())
        assert answers == ["503", "201"]
