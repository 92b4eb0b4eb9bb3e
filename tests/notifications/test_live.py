"""End to end on real processes: the e-mail an operator gets answers the waiting agent, a
Celery worker killed mid-send still delivers exactly once, and a Redis outage loses nothing."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from tests.live import Stack, embedded_stack, production_stack, redis_process

from .conftest import SmtpServer, text_and_html

REQUEST = {
    "kind": "approval",
    "title": "Refund $750 to order #1042",
    "action": {"name": "issue_refund", "arguments": {"order": 1042, "amount": 750}},
    "context": {"reasoning": "The customer was charged twice."},
}
OPERATOR = "owner@live.test"


def _create(base: str, key: str, **overrides: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{base}/api/v1/escalations",
        json={**REQUEST, **overrides},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_the_emailed_link_approves_and_the_waiting_agent_returns(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    with embedded_stack(tmp_path) as stack:
        stack.use_smtp(smtp_server.host, smtp_server.port)
        org = stack.organization()
        base = stack.daphne()
        escalation = _create(base, org["agent_key"])
        waited: dict[str, Any] = {}

        def wait() -> None:
            waited["response"] = httpx.get(
                f"{base}/api/v1/escalations/{escalation['id']}/wait",
                params={"timeout": 30},
                headers={"Authorization": f"Bearer {org['agent_key']}"},
                timeout=40,
            )

        waiter = threading.Thread(target=wait)
        waiter.start()
        stack.until(lambda: smtp_server.inbox.to(OPERATOR), 10, "the e-mail")
        (message,) = smtp_server.inbox.to(OPERATOR)
        text, _ = text_and_html(message)
        approve = re.search(r"Approve:\s+(\S+)", text).group(1)  # type: ignore[union-attr]
        link = base + urlsplit(approve).path

        page = httpx.get(link, timeout=10)
        assert page.status_code == 200
        assert "Confirm: approve" in page.text
        time.sleep(0.5)
        assert waiter.is_alive(), "a GET must not decide anything"

        confirmed = httpx.post(link, timeout=10)
        assert confirmed.status_code == 200, confirmed.text
        assert "You approved this request" in confirmed.text
        waiter.join(timeout=15)
        decided = waited["response"].json()
        assert decided["status"] == "approved"
        assert decided["decision"]["channel"] == "email"
        assert decided["decision"]["decided_by"]["email"] == OPERATOR


def _deliveries(stack: Stack) -> list[tuple[str, int]]:
    with psycopg.connect(stack.env["DATABASE_URL"]) as connection:
        return connection.execute(
            "SELECT status, attempts FROM notifications_delivery ORDER BY id"
        ).fetchall()


@pytest.mark.services
def test_a_celery_worker_delivers_the_email_exactly_once(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    with production_stack(tmp_path) as stack:
        stack.use_smtp(smtp_server.host, smtp_server.port)
        org = stack.organization()
        base = stack.daphne()
        stack.celery()
        _create(base, org["agent_key"])
        stack.until(lambda: smtp_server.inbox.to(OPERATOR), 20, "the e-mail")
        time.sleep(3)  # a duplicate would have arrived by now
        assert len(smtp_server.inbox.to(OPERATOR)) == 1
        assert _deliveries(stack) == [("sent", 1)]


@pytest.mark.services
def test_a_worker_killed_mid_send_still_delivers_exactly_once(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    smtp_server.inbox.stall_first_data = True
    with production_stack(tmp_path) as stack:
        stack.use_smtp(
            smtp_server.host,
            smtp_server.port,
            NOTIFICATION_DELIVERY_LEASE_SECONDS="3",
            NOTIFICATION_SWEEP_SECONDS="1",
        )
        org = stack.organization()
        base = stack.daphne()
        first = stack.worker("worker-1")
        stack.beat()
        _create(base, org["agent_key"])

        stack.until(smtp_server.inbox.stalled.is_set, 20, "the first SMTP DATA")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert smtp_server.inbox.to(OPERATOR) == []
        assert _deliveries(stack) == [("sending", 1)]

        stack.worker("worker-2")
        stack.until(lambda: smtp_server.inbox.to(OPERATOR), 30, "the e-mail after the restart")
        time.sleep(4)  # past another lease and several sweeps: nothing is sent twice
        assert len(smtp_server.inbox.to(OPERATOR)) == 1
        assert _deliveries(stack) == [("sent", 2)]


def _add_operators(stack: Stack, count: int) -> list[str]:
    stack.manage(
        "shell",
        "-c",
        "from tenants.models import Organization\n"
        "from audit.services import SYSTEM_ACTOR\n"
        "from tenants.services import membership_add, user_get_or_create\n"
        "organization = Organization.objects.get()\n"
        f"for n in range({count}):\n"
        "    user = user_get_or_create(email=f'operator{n}@live.test')\n"
        "    membership_add(organization=organization, user=user, role='operator',"
        " actor=SYSTEM_ACTOR)\n",
    )
    return [f"operator{n}@live.test" for n in range(count)]


@pytest.mark.services
def test_a_worker_killed_mid_fan_out_resends_at_most_the_message_in_flight(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """Thirty recipients in one batch; the worker is killed while sending the eleventh. The ten
    already sent were recorded one by one, so the next worker sends the other twenty and at most
    the one that was in flight again (under the same Message-ID)."""
    smtp_server.inbox.stall_after = 10
    with production_stack(tmp_path) as stack:
        stack.use_smtp(
            smtp_server.host,
            smtp_server.port,
            NOTIFICATION_DELIVERY_LEASE_SECONDS="3",
            NOTIFICATION_SWEEP_SECONDS="1",
        )
        org = stack.organization()
        recipients = [OPERATOR, *_add_operators(stack, 29)]
        base = stack.daphne()
        first = stack.worker("worker-1")
        stack.beat()
        _create(base, org["agent_key"])

        stack.until(smtp_server.inbox.stalled.is_set, 30, "the eleventh SMTP DATA")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        smtp_server.inbox.release.set()
        assert [status for status, _ in _deliveries(stack)].count("sent") == 10

        stack.worker("worker-2")

        def everyone_has_one() -> bool:
            return all(smtp_server.inbox.to(address) for address in recipients)

        stack.until(everyone_has_one, 60, "an e-mail to every recipient")
        time.sleep(4)  # past another lease and several sweeps
        received = {address: smtp_server.inbox.to(address) for address in recipients}
        repeats = {address: found for address, found in received.items() if len(found) > 1}
        assert sum(len(found) - 1 for found in repeats.values()) <= 1, sorted(repeats)
        for found in repeats.values():
            assert len({message["Message-ID"] for message in found}) == 1
        assert {status for status, _ in _deliveries(stack)} == {"sent"}


@pytest.mark.services
def test_redis_stopped_for_30_seconds_and_restarted_loses_no_delivery(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """The broker goes away with tasks queued in it and comes back empty (no persistence):
    agents keep escalating meanwhile, and every operator e-mail still arrives exactly once."""
    with (
        redis_process(tmp_path) as redis_server,
        production_stack(tmp_path, redis_url=redis_server.url) as stack,
    ):
        stack.use_smtp(
            smtp_server.host,
            smtp_server.port,
            NOTIFICATION_SWEEP_SECONDS="1",
            NOTIFICATION_LOST_TASK_SECONDS="5",
        )
        org = stack.organization()
        base = stack.daphne()
        stack.celery()
        titles = [f"Refund #{n}" for n in range(1, 7)]

        def received() -> list[str]:
            return sorted(str(m["Subject"]) for m in smtp_server.inbox.to(OPERATOR))

        for title in titles[:2]:
            _create(base, org["agent_key"], title=title)
        stack.until(lambda: len(received()) == 2, 20, "the e-mails before the outage")

        smtp_server.inbox.stall_first_data = True  # the next send hangs: its task stays queued
        _create(base, org["agent_key"], title=titles[2])
        stack.until(smtp_server.inbox.stalled.is_set, 20, "the third e-mail's SMTP DATA")
        _create(base, org["agent_key"], title=titles[3])  # queued in Redis behind it

        outage = time.monotonic()
        redis_server.stop()
        smtp_server.inbox.release.set()  # the stalled send ends with a 451: retried later
        for title in titles[4:]:
            _create(base, org["agent_key"], title=title)  # the API keeps answering 201
        time.sleep(max(0.0, 30 - (time.monotonic() - outage)))
        assert len(received()) == 2, "nothing can be sent while the broker is down"
        redis_server.start()

        stack.until(lambda: len(received()) == 6, 90, "every e-mail after the restart")
        time.sleep(4)  # past several sweeps: a duplicate would have arrived by now
        assert received() == sorted(f"[AwaitHuman] {title}" for title in titles)
        assert {status for status, _ in _deliveries(stack)} == {"sent"}
