"""Effects survive a crash: the web process SIGKILLed in the middle of a burst of creates loses
no notification, because each create owes its effects in its own transaction (the outbox) and the
worker's dispatcher delivers them, whether or not the web process lived to nudge it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.live import Stack, production_stack

from .conftest import SmtpServer

OPERATOR = "owner@live.test"
BURST = 40

pytestmark = pytest.mark.services


def _until(condition: Any, timeout: float, what: str, stack: Stack) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s:\n{stack.output()}")


def test_the_web_process_killed_mid_burst_loses_no_notification(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    with production_stack(tmp_path) as stack:
        stack.env.update(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST=smtp_server.host,
            EMAIL_PORT=str(smtp_server.port),
        )
        org = stack.organization()
        base = stack.daphne()
        web = stack.processes[-1]
        stack.celery()

        answered: list[str] = []
        first_answer = threading.Event()

        def create(n: int) -> None:
            try:
                response = httpx.post(
                    f"{base}/api/v1/escalations",
                    json={"kind": "approval", "title": f"Burst escalation {n:03d}"},
                    headers={"Authorization": f"Bearer {org['agent_key']}"},
                    timeout=30,
                )
            except httpx.TransportError:
                return  # killed before it answered: committed or not, the database says
            if response.status_code == 201:
                answered.append(response.json()["id"])
                first_answer.set()

        threads = [threading.Thread(target=create, args=(n,)) for n in range(BURST)]
        for thread in threads:
            thread.start()
        assert first_answer.wait(30), stack.output()
        os.kill(web.pid, signal.SIGKILL)
        for thread in threads:
            thread.join()

        with psycopg.connect(stack.env["DATABASE_URL"]) as connection:
            committed = {
                title for (title,) in connection.execute("SELECT title FROM escalations_escalation")
            }
        assert answered and len(committed) >= len(answered)

        stack.daphne()  # the restart; the worker's dispatcher needs nothing from it

        def subjects() -> Counter[str]:
            return Counter(
                str(message["Subject"]).removeprefix("[AwaitHuman] ")
                for message in smtp_server.inbox.to(OPERATOR)
            )

        _until(
            lambda: set(subjects()) >= committed, 60, "an e-mail per committed escalation", stack
        )
        time.sleep(3)  # a duplicate would have arrived by now
        received = subjects()
        assert {title for title in received if title.startswith("Burst")} == committed
        assert all(count == 1 for count in received.values()), received

        # Every audit event of the burst was sealed into an intact chain.
        assert "ok" in stack.manage("audit_verify").lower()
        with psycopg.connect(stack.env["DATABASE_URL"]) as connection:
            (unsealed,) = connection.execute(
                "SELECT count(*) FROM audit_auditevent WHERE seq IS NULL"
            ).fetchone()
            (owed,) = connection.execute("SELECT count(*) FROM escalations_outboxevent").fetchone()
        assert (unsealed, owed) == (0, 0)
