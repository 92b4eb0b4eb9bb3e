"""The production processes, for real: two web processes (``awaithuman serve``), a worker and beat
on PostgreSQL and Redis, sharing one PROMETHEUS_MULTIPROC_DIR.

An agent creates and waits on web 1; an operator answers on web 2; the e-mail goes out through
the worker to a local SMTP server and the callback reaches a local receiver; one scrape of web 2
shows the figures of all four processes. Then web 1 is killed: web 2 keeps serving, and the
agent's retry with its idempotency key gets the one escalation it already has.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live import BIN, Stack, production_stack
from tests.notifications.conftest import SmtpServer
from tests.notifications.fake_receiver import Receiver, running_receiver

pytestmark = pytest.mark.services

TOKEN = "scrape-token-of-the-live-test-0123456789"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def until(condition: Callable[[], Any], what: str, stack: Stack, timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s:\n{stack.output()}")


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def start_worker_and_beat(stack: Stack) -> None:
    python = str(BIN / "python")
    stack.start("worker", python, "-m", "awaithuman", "worker")
    schedule = str(stack.workdir / "beat-schedule")
    stack.start("beat", python, "-m", "awaithuman", "beat", "--schedule", schedule)
    stack._wait_for_log("worker.log", " ready.")
    stack._wait_for_log("beat.log", "Scheduler: Sending due task")


def test_two_web_processes_a_worker_and_beat_serve_one_escalation_end_to_end(
    tmp_path: Path, smtp_server: SmtpServer, receiver: Receiver
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with production_stack(tmp_path) as stack:
        stack.env.update(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST=smtp_server.host,
            EMAIL_PORT=str(smtp_server.port),
            OUTBOUND_ALLOW_PRIVATE="1",  # the callback receiver is on 127.0.0.1
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
            METRICS_TOKEN=TOKEN,
        )
        org = stack.organization()
        web1 = stack.serve()
        web1_process = stack.processes[-1]
        web2 = stack.serve()
        start_worker_and_beat(stack)
        agent = {"Authorization": f"Bearer {org['agent_key']}"}
        operator = {"Authorization": f"Bearer {org['operator_key']}"}
        request = {
            "kind": "approval",
            "title": "Refund $750 to order #1042",
            "callback_url": receiver.url,
        }
        retry_safe = {**agent, "Idempotency-Key": "run-42-refund-1042"}

        # The agent, on web 1: create, then wait.
        created = httpx.post(f"{web1}/api/v1/escalations", json=request, headers=retry_safe)
        assert created.status_code == 201, created.text
        escalation = created.json()["id"]
        waited: dict[str, Any] = {}

        def wait() -> None:
            waited["response"] = httpx.get(
                f"{web1}/api/v1/escalations/{escalation}/wait?timeout=50", headers=agent, timeout=60
            )

        waiter = threading.Thread(target=wait)
        waiter.start()
        # Parked on web 1, seen from web 2: the samples are shared through the folder.
        until(lambda: value(scrape(web2), "awaithuman_waiters_parked") == 1, "the park", stack)

        # The notification, sent by the worker through the SMTP server.
        mail = until(
            lambda: [m for m in smtp_server.inbox.messages if "#1042" in str(m["Subject"])],
            "the e-mail",
            stack,
        )
        assert mail[0]["To"] == "owner@live.test"

        # The operator, on web 2.
        answered = httpx.post(
            f"{web2}/api/v1/escalations/{escalation}/responses",
            json={"outcome": "approve"},
            headers=operator,
        )
        assert answered.status_code == 201, answered.text
        waiter.join(timeout=30)
        assert waited["response"].status_code == 200
        assert waited["response"].json()["status"] == "approved"

        callback = until(lambda: receiver.requests, "the callback", stack)
        payload = callback[0].body.decode()
        assert '"type":"escalation.decided"' in payload.replace(" ", "")
        assert escalation in payload

        # One scrape of web 2 sums web 1, web 2 and the worker.
        samples = until(
            lambda: (
                (s := scrape(web2))
                and value(
                    s, "awaithuman_callback_attempts_total", kind="callback", result="success"
                )
                and s
            ),
            "the callback attempt in the metrics",
            stack,
        )
        created_total = "awaithuman_escalations_created_total"
        assert value(samples, created_total, policy_outcome="require_human") == 1
        decided = {"outcome": "approved", "decided_by": "user"}
        assert value(samples, "awaithuman_escalations_decided_total", **decided) == 1
        ttd = "awaithuman_escalation_time_to_decision_seconds_count"
        assert value(samples, ttd, decided_by="user") == 1
        assert value(samples, "awaithuman_waiters_parked") == 0
        assert value(samples, "awaithuman_waiter_wake_seconds_count") == 1
        assert value(samples, "awaithuman_deliveries_total", channel="email", result="sent") == 1
        assert value(samples, "awaithuman_outbox_dispatch_delay_seconds_count") >= 2
        assert value(samples, "awaithuman_escalations_pending", priority="normal") == 0
        requests = "awaithuman_http_request_duration_seconds_count"
        assert (
            value(samples, requests, route="api/v1/escalations", method="POST", status="201") == 1
        )
        answer_route = "api/v1/escalations/<str:public_id>/responses"
        assert value(samples, requests, route=answer_route, method="POST", status="201") == 1

        # Web 1 dies; web 2 goes on, and the agent's retry gets the same single escalation.
        os.kill(web1_process.pid, signal.SIGKILL)
        web1_process.wait(timeout=10)
        assert httpx.get(f"{web2}/readyz").status_code == 200
        retried = httpx.post(f"{web2}/api/v1/escalations", json=request, headers=retry_safe)
        assert retried.status_code == 201, retried.text
        assert retried.headers["Idempotent-Replayed"] == "true"
        assert retried.json()["id"] == escalation
        with psycopg.connect(stack.env["DATABASE_URL"]) as connection:
            (count,) = connection.execute("SELECT count(*) FROM escalations_escalation").fetchone()
        assert count == 1
