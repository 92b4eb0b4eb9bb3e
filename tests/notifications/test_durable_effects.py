"""Effects survive crashes and failures, on real processes.

Each change owes its effects in its own transaction (the outbox), and a dispatcher hands them to
their consumers, whether or not the process that made the change lived to nudge it. Here:

* the web process SIGKILLed in the middle of a burst of creates loses no e-mail and no callback;
* a consumer that fails on its first try (its statement gives up on a row lock, as a production
  database's ``lock_timeout`` makes it) still delivers its effect, once;
* the dispatcher SIGKILLed in the middle of a batch repeats nothing: the batch's transaction
  never committed, and the next dispatcher takes the same rows;
* a worker SIGKILLed while a callback is in flight sends that one callback again, with the same
  ``webhook-id``, and every other exactly once;
* the embedded default (``make run``: one daphne process, SQLite) killed mid-burst loses nothing
  that committed either.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.live import Stack, embedded_stack, production_stack

from .conftest import SmtpServer
from .fake_receiver import Answer, running_receiver

OPERATOR = "owner@live.test"
BURST = 40


def _create(base: str, key: str, title: str, **extra: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{base}/api/v1/escalations",
        json={"kind": "approval", "title": title, **extra},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def _subjects(smtp_server: SmtpServer) -> Counter[str]:
    return Counter(
        str(message["Subject"]).removeprefix("[AwaitHuman] ")
        for message in smtp_server.inbox.to(OPERATOR)
    )


def _burst_then_kill(base: str, key: str, web: Any, **extra: Any) -> list[str]:
    """BURST creates at once; the web process is SIGKILLed as soon as the first is answered.
    Returns the ids of the creates that were answered 201."""
    answered: list[str] = []
    first_answer = threading.Event()

    def create(n: int) -> None:
        try:
            response = httpx.post(
                f"{base}/api/v1/escalations",
                json={"kind": "approval", "title": f"Burst escalation {n:03d}", **extra},
                headers={"Authorization": f"Bearer {key}"},
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
    assert first_answer.wait(30)
    os.kill(web.pid, signal.SIGKILL)
    for thread in threads:
        thread.join()
    return answered


def _assert_once_each(stack: Stack, smtp_server: SmtpServer, titles: set[str]) -> None:
    """Every one of ``titles`` e-mailed to the operator, and nothing e-mailed twice (a title's
    "Deadline soon" reminder is a message of its own, once too)."""
    stack.until(lambda: set(_subjects(smtp_server)) >= titles, 60, f"{len(titles)} e-mails")
    time.sleep(3)  # a duplicate would have arrived by now
    received = _subjects(smtp_server)
    assert set(received) - titles <= {f"Deadline soon: {title}" for title in titles}
    assert all(count == 1 for count in received.values()), received


def _owed(stack: Stack) -> int:
    return stack.sql("SELECT count(*) FROM escalations_outboxevent")[0][0]


@pytest.mark.services
def test_the_web_process_killed_mid_burst_loses_no_notification_and_no_callback(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """Each escalation of the burst times out 12 s after its create, so that each one that
    committed must both e-mail its operator and, once expired, call its agent back."""
    with running_receiver() as receiver, production_stack(tmp_path) as stack:
        stack.use_smtp(smtp_server.host, smtp_server.port, OUTBOUND_ALLOW_PRIVATE="1")
        org = stack.organization()
        base = stack.daphne()
        web = stack.processes[-1]
        stack.celery()

        answered = _burst_then_kill(
            base,
            org["agent_key"],
            web,
            callback_url=receiver.url,
            timeout_seconds=12,
            on_timeout="reject",
        )
        committed = dict(stack.sql("SELECT public_id, title FROM escalations_escalation"))
        assert answered and set(answered) <= set(committed)

        stack.daphne()  # the restart; the worker's dispatcher needs nothing from it
        _assert_once_each(stack, smtp_server, set(committed.values()))

        def called_back() -> Counter[str]:
            return Counter(request.json_body()["data"]["id"] for request in receiver.requests)

        stack.until(lambda: set(called_back()) >= set(committed), 60, "a callback for each")
        time.sleep(3)
        assert called_back() == Counter(dict.fromkeys(committed, 1))
        outcomes = {
            (request.json_body()["type"], request.json_body()["data"]["status"])
            for request in receiver.requests
        }
        assert outcomes == {("escalation.decided", "rejected")}

        # Every audit event of the burst was sealed into an intact chain.
        assert "ok" in stack.manage("audit_verify").lower()
        unsealed = stack.sql("SELECT count(*) FROM audit_auditevent WHERE seq IS NULL")[0][0]
        assert (unsealed, _owed(stack)) == (0, 0)


@pytest.mark.services
def test_a_consumer_that_fails_its_first_try_delivers_its_effect_exactly_once(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    with production_stack(tmp_path) as stack:
        stack.use_smtp(smtp_server.host, smtp_server.port)
        org = stack.organization()
        base = stack.daphne()
        # The worker's statements give up on a row lock after 1 s, as production databases are
        # often set to (``lock_timeout``): a consumer that meets a held lock fails.
        impatient = stack.env["DATABASE_URL"] + "?options=-c%20lock_timeout%3D1000"
        stack.worker("worker", env={"DATABASE_URL": impatient})
        stack.beat()
        _create(base, org["agent_key"], "First")
        stack.until(lambda: _subjects(smtp_server), 30, "the first e-mail")

        with psycopg.connect(stack.env["DATABASE_URL"]) as holder:
            # A new delivery row references the operator's contact point: while this transaction
            # holds that row, the fan-out consumer's insert waits for it, then gives up.
            holder.execute("SELECT id FROM notifications_contactpoint FOR UPDATE")
            _create(base, org["agent_key"], "Second")
            failed = (
                "SELECT attempts, last_error FROM escalations_outboxevent "
                "WHERE consumer = 'notifications.fanout' AND attempts > 0"
            )
            stack.until(lambda: stack.sql(failed), 30, "the fan-out's first try to fail")
            [(attempts, error)] = stack.sql(failed)
            assert attempts == 1
            assert "lock timeout" in error
            assert set(_subjects(smtp_server)) == {"First"}

        # The lock is gone: the retry (after its 2 s backoff) delivers, once.
        _assert_once_each(stack, smtp_server, {"First", "Second"})
        assert _owed(stack) == 0


@pytest.mark.services
def test_the_dispatcher_killed_mid_batch_repeats_and_loses_nothing(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    with production_stack(tmp_path) as stack:
        stack.use_smtp(smtp_server.host, smtp_server.port)
        org = stack.organization()
        base = stack.daphne()
        first = stack.worker("worker-1")
        stack.beat()
        _create(base, org["agent_key"], "Warm-up")  # makes the operator's contact point
        stack.until(lambda: _subjects(smtp_server), 30, "the first e-mail")

        held = {f"Held {n}" for n in range(5)}
        with psycopg.connect(stack.env["DATABASE_URL"]) as holder:
            holder.execute("SELECT id FROM notifications_contactpoint FOR UPDATE")
            for title in sorted(held):
                _create(base, org["agent_key"], title)
            waiting = (
                "SELECT pid FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            # The dispatcher has claimed its batch, run the live-queue consumer and is inside
            # the fan-out's insert, in the batch's one transaction: kill it there.
            stack.until(lambda: stack.sql(waiting), 30, "the dispatcher to wait mid-batch")
            os.kill(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
            assert set(_subjects(smtp_server)) == {"Warm-up"}

        stack.worker("worker-2")
        _assert_once_each(stack, smtp_server, {"Warm-up", *held})
        stack.until(lambda: _owed(stack) == 0, 30, "the outbox to drain")


@pytest.mark.services
def test_a_worker_killed_mid_callback_sends_it_again_under_the_same_webhook_id(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    with running_receiver() as receiver, production_stack(tmp_path) as stack:
        stack.use_smtp(
            smtp_server.host,
            smtp_server.port,
            OUTBOUND_ALLOW_PRIVATE="1",
            WEBHOOK_CLAIM_SECONDS="3",
        )
        org = stack.organization()
        base = stack.daphne()
        first = stack.worker("worker-1")
        stack.beat()
        receiver.answer(Answer(delay=60))  # the first callback hangs until the worker dies
        ids = [
            _create(base, org["agent_key"], f"Called back {n}", callback_url=receiver.url)["id"]
            for n in range(3)
        ]
        for public_id in ids:
            cancelled = httpx.post(
                f"{base}/api/v1/escalations/{public_id}/cancel",
                headers={"Authorization": f"Bearer {org['agent_key']}"},
                timeout=10,
            )
            assert cancelled.status_code == 200, cancelled.text
        stack.until(lambda: receiver.requests, 30, "the first callback")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        [in_flight] = receiver.requests

        stack.worker("worker-2")
        by_escalation: dict[str, list[str]] = {}

        def everyone_called_back() -> bool:
            by_escalation.clear()
            for request in list(receiver.requests):
                escalation_id = request.json_body()["data"]["id"]
                by_escalation.setdefault(escalation_id, []).append(request.webhook_id)
            return set(by_escalation) == set(ids) and len(by_escalation[ids[0]]) >= 1

        stack.until(everyone_called_back, 60, "a callback for each escalation")
        stack.until(lambda: len(receiver.requests) == 4, 30, "the in-flight callback again")
        time.sleep(4)  # past another claim: nothing more may come
        everyone_called_back()
        in_flight_id = in_flight.json_body()["data"]["id"]
        assert by_escalation[in_flight_id] == [in_flight.webhook_id] * 2
        assert all(len(found) == 1 for key, found in by_escalation.items() if key != in_flight_id)
        statuses = stack.sql("SELECT status, count(*) FROM notifications_webhookmessage GROUP BY 1")
        assert statuses == [("succeeded", 3)]


def test_the_embedded_server_killed_mid_burst_loses_nothing_that_committed(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    """``make run`` is one process: the changes, the dispatcher and the sends all live in it.
    Killed mid-burst and started again, it sends every committed escalation's e-mail; one that
    was on the wire at the kill may go again, under the same Message-ID."""
    with embedded_stack(tmp_path) as stack:
        stack.use_smtp(
            smtp_server.host,
            smtp_server.port,
            NOTIFICATION_DELIVERY_LEASE_SECONDS="3",
            NOTIFICATION_SWEEP_SECONDS="1",
        )
        org = stack.organization()
        base = stack.daphne()
        answered = _burst_then_kill(base, org["agent_key"], stack.processes[-1])
        database = stack.env["DATABASE_URL"].removeprefix("sqlite:///")
        with sqlite3.connect(database) as connection:
            committed = dict(
                connection.execute("SELECT public_id, title FROM escalations_escalation")
            )
        assert answered and set(answered) <= set(committed)

        stack.daphne()
        titles = set(committed.values())
        stack.until(lambda: set(_subjects(smtp_server)) >= titles, 60, "an e-mail for each")
        time.sleep(4)  # past a lease and several sweeps
        received = _subjects(smtp_server)
        assert set(received) == titles
        repeated = [title for title, count in received.items() if count > 1]
        assert len(repeated) <= 1 and received.most_common(1)[0][1] <= 2, received
        for title in repeated:
            found = [m for m in smtp_server.inbox.to(OPERATOR) if str(m["Subject"]).endswith(title)]
            assert len({message["Message-ID"] for message in found}) == 1
