"""The long-poll: returns the moment the escalation is decided, or its state at the timeout.

These run against the real ASGI application (the consumer routed ahead of Django). The test for a
waiter on one process woken by a decision on another is in ``test_wait_across_processes.py``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator

from awaithuman.asgi import application
from tests.conftest import create_escalation

pytestmark = pytest.mark.django_db(transaction=True)


async def wait(key: str, public_id: str, query: str = "", timeout: float = 10) -> dict[str, Any]:
    communicator = HttpCommunicator(
        application,
        "GET",
        f"/api/v1/escalations/{public_id}/wait{query}",
        headers=[(b"authorization", f"Bearer {key}".encode())],
    )
    response = await communicator.get_response(timeout=timeout)
    await communicator.wait()
    headers = {name.decode().lower(): value.decode() for name, value in response["headers"]}
    return {"status": response["status"], "headers": headers, "body": json.loads(response["body"])}


async def test_wait_returns_a_decided_escalation_at_once(acme):
    created = await sync_to_async(create_escalation)(acme)
    await sync_to_async(acme.agent_client().post)(f"/api/v1/escalations/{created['id']}/cancel")
    result = await wait(acme.agent_key, created["id"], timeout=2)
    assert result["status"] == 200
    assert result["body"]["status"] == "cancelled"
    assert result["headers"]["content-type"] == "application/json"


async def test_wait_returns_the_current_state_after_the_timeout(acme):
    created = await sync_to_async(create_escalation)(acme)
    result = await wait(acme.agent_key, created["id"], "?timeout=0.3", timeout=5)
    assert result["status"] == 200
    assert result["body"]["status"] == "pending"
    assert result["body"]["decision"] is None
    assert "ratelimit" in result["headers"]


async def test_a_decision_wakes_the_waiter_before_its_timeout(acme):
    created = await sync_to_async(create_escalation)(acme)
    waiter = asyncio.create_task(wait(acme.agent_key, created["id"], "?timeout=30", timeout=20))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    answer = await sync_to_async(acme.client_for("bob").post)(
        f"/api/v1/escalations/{created['id']}/responses",
        {"outcome": "approve", "comment": "ok"},
        format="json",
    )
    assert answer.status_code == 201
    result = await asyncio.wait_for(waiter, 5)
    assert result["body"]["status"] == "approved"
    assert result["body"]["decision"]["comment"] == "ok"


async def test_many_waiters_on_one_escalation_all_wake(acme):
    created = await sync_to_async(create_escalation)(acme)
    waiters = [
        asyncio.create_task(wait(acme.agent_key, created["id"], "?timeout=30", timeout=20))
        for _ in range(20)
    ]
    await asyncio.sleep(0.3)
    await sync_to_async(acme.agent_client().post)(f"/api/v1/escalations/{created['id']}/cancel")
    results = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert {result["body"]["status"] for result in results} == {"cancelled"}


async def test_a_claim_does_not_end_the_wait(acme):
    created = await sync_to_async(create_escalation)(acme)
    # The wait's own timeout leaves the claim seconds to land, even on a loaded machine; a wait
    # that returned before the claim would show it unclaimed.
    waiter = asyncio.create_task(wait(acme.agent_key, created["id"], "?timeout=3", timeout=15))
    await asyncio.sleep(0.2)
    await sync_to_async(acme.client_for("bob").post)(f"/api/v1/escalations/{created['id']}/claim")
    await asyncio.sleep(0.3)
    assert not waiter.done()
    result = await waiter
    assert result["body"]["status"] == "pending"
    assert result["body"]["claimed_by"]["email"] == "bob@acme.test"


@pytest.mark.parametrize("query", ["?timeout=61", "?timeout=-1", "?timeout=soon"])
async def test_wait_refuses_a_bad_timeout(acme, query):
    created = await sync_to_async(create_escalation)(acme)
    result = await wait(acme.agent_key, created["id"], query, timeout=2)
    assert result["status"] == 400
    assert result["headers"]["content-type"] == "application/problem+json"
    assert "timeout" in result["body"]["errors"]


async def test_wait_without_a_key_is_401(acme):
    communicator = HttpCommunicator(application, "GET", "/api/v1/escalations/esc_x/wait")
    response = await communicator.get_response(timeout=2)
    assert response["status"] == 401
    assert dict(response["headers"])[b"WWW-Authenticate"].startswith(b"Bearer")


async def test_wait_for_an_unknown_escalation_is_404(acme):
    result = await wait(acme.agent_key, "esc_doesnotexist", timeout=2)
    assert result["status"] == 404
    assert result["body"]["type"].endswith("/not-found")


async def test_waiters_woken_together_each_get_their_own_decision(acme, globex):
    created = [await sync_to_async(create_escalation)(acme) for _ in range(12)]
    foreign = await sync_to_async(create_escalation)(globex)
    waiters = [
        asyncio.create_task(wait(acme.agent_key, escalation["id"], "?timeout=30", timeout=20))
        for escalation in created
    ]
    stranger = asyncio.create_task(wait(acme.agent_key, foreign["id"], "?timeout=30", timeout=20))
    await asyncio.sleep(0.5)
    assert not any(waiter.done() for waiter in waiters)
    bob = acme.client_for("bob")
    for n, escalation in enumerate(created):
        outcome = "approve" if n % 2 else "reject"
        answer = await sync_to_async(bob.post)(
            f"/api/v1/escalations/{escalation['id']}/responses", {"outcome": outcome}, format="json"
        )
        assert answer.status_code == 201, answer.content
    results = await asyncio.gather(*waiters)
    assert [(r["body"]["id"], r["body"]["status"]) for r in results] == [
        (escalation["id"], "approved" if n % 2 else "rejected")
        for n, escalation in enumerate(created)
    ]
    assert all("ratelimit" in result["headers"] for result in results)
    # Another organization's escalation is never read back into this key's answer.
    assert (await stranger)["status"] == 404


async def test_a_timeout_shorter_than_the_first_read_still_returns_the_escalation(acme):
    # The first read of a waiter that is going to park skips the body; when it takes longer
    # than the whole timeout (1 ms here; a loaded server with 0.3 s), the answer must still be
    # the escalation, never an empty object.
    created = await sync_to_async(create_escalation)(acme)
    for _ in range(5):
        result = await wait(acme.agent_key, created["id"], "?timeout=0.001", timeout=5)
        assert result["status"] == 200
        assert result["body"]["id"] == created["id"]
        assert result["body"]["status"] == "pending"
