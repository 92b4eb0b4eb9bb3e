"""Per-key rate limits and their headers (draft-ietf-httpapi-ratelimit-headers).

The embedded counter is process-global and keyed by key id and window, so every test issues fresh
keys. The window is an hour here, so a test never straddles two windows.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.test import override_settings

from audit.services import SYSTEM_ACTOR
from awaithuman.asgi import application
from escalations.models import Escalation
from tenants.ids import encode_base62, random_base62
from tenants.services import agent_create, api_key_create
from tests.conftest import APPROVAL, Tenant, api_client, create_escalation
from tests.live import production_stack

WINDOW = 3600
POLICY = re.compile(r'^"key";q=(\d+);w=(\d+)$')
REMAINING = re.compile(r'^"key";r=(\d+);t=(\d+)$')
PROBLEM = "application/problem+json"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _one_window_per_test():
    with override_settings(RATE_LIMIT_WINDOW_SECONDS=WINDOW):
        yield


def fresh_agent_key(
    tenant: Tenant, *, name: str = "burst-bot", rate_limit: int | None = None
) -> str:
    agent = tenant.organization.agents.filter(name=name).first() or agent_create(
        organization=tenant.organization, name=name, actor=SYSTEM_ACTOR
    )
    issued = api_key_create(organization=tenant.organization, agent=agent, actor=SYSTEM_ACTOR)
    if rate_limit is not None:
        issued.api_key.rate_limit = rate_limit
        issued.api_key.save(update_fields=["rate_limit"])
    return issued.plaintext


def limits(headers: Any) -> tuple[int, int, int, int]:
    """(quota, window, remaining, reset) from the two headers, checking their format."""
    policy = POLICY.match(headers["RateLimit-Policy"])
    state = REMAINING.match(headers["RateLimit"])
    assert policy, headers["RateLimit-Policy"]
    assert state, headers["RateLimit"]
    return int(policy[1]), int(policy[2]), int(state[1]), int(state[2])


def get(key: str, path: str = "/api/v1/escalations") -> Any:
    return api_client(key).get(path)


def test_every_kind_of_answer_carries_the_rate_limit_headers(acme, globex):
    key = fresh_agent_key(acme)
    client = api_client(key)
    escalation = create_escalation(acme)["id"]
    foreign = create_escalation(globex)["id"]
    answers = [
        client.get("/api/v1/escalations"),  # 200
        client.post("/api/v1/escalations", APPROVAL, format="json"),  # 201
        client.post("/api/v1/escalations", {"title": ""}, format="json"),  # 400
        client.post("/api/v1/escalations", "x", content_type="text/plain"),  # 415
        client.get(f"/api/v1/escalations/{foreign}"),  # 404
        client.post(f"/api/v1/escalations/{escalation}/claim"),  # 403: lacks responses:write
        client.post(f"/api/v1/escalations/{escalation}/cancel"),  # 403: not its agent
        acme.agent_client().post(f"/api/v1/escalations/{escalation}/cancel"),  # 200
        acme.agent_client().post(f"/api/v1/escalations/{escalation}/cancel"),  # 409
    ]
    assert [answer.status_code for answer in answers] == [
        200,
        201,
        400,
        415,
        404,
        403,
        403,
        200,
        409,
    ]
    for answer in answers:
        quota, window, remaining, reset = limits(answer)
        assert (quota, window) == (600, WINDOW)
        assert 0 < reset <= WINDOW
    remaining = [limits(answer)[2] for answer in answers[:7]]
    assert remaining == [599, 598, 597, 596, 595, 594, 593]


def test_a_personal_key_gets_the_headers_too(acme):
    response = acme.client_for("bob").get("/api/v1/escalations")
    assert response.status_code == 200
    limits(response)


def test_past_the_limit_the_key_gets_429_with_retry_after(acme):
    key = fresh_agent_key(acme)
    with override_settings(RATE_LIMIT_DEFAULT=3):
        answers = [get(key) for _ in range(5)]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 429, 429]
    assert [limits(answer)[2] for answer in answers] == [2, 1, 0, 0, 0]
    refused = answers[3]
    assert refused["Content-Type"] == PROBLEM
    assert refused.json()["status"] == 429
    retry_after = int(refused["Retry-After"])
    assert 0 < retry_after <= WINDOW
    assert retry_after == limits(refused)[3]


def test_a_refused_create_writes_nothing(acme):
    key = fresh_agent_key(acme, rate_limit=1)
    client = api_client(key)
    assert client.post("/api/v1/escalations", APPROVAL, format="json").status_code == 201
    refused = client.post("/api/v1/escalations", APPROVAL, format="json")
    assert refused.status_code == 429
    assert Escalation.objects.count() == 1


def test_a_key_can_carry_its_own_limit(acme):
    key = fresh_agent_key(acme, rate_limit=2)
    answers = [get(key) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert limits(answers[0])[:3] == (2, WINDOW, 1)


def test_limits_are_per_key_not_per_organization(acme):
    exhausted = fresh_agent_key(acme, rate_limit=2)
    same_agent = fresh_agent_key(acme, rate_limit=2)
    other_agent = fresh_agent_key(acme, name="other-bot", rate_limit=2)
    for _ in range(3):
        get(exhausted)
    assert get(exhausted).status_code == 429
    for key in (same_agent, other_agent):
        response = get(key)
        assert response.status_code == 200
        assert limits(response)[2] == 1
    assert acme.client_for("bob").get("/api/v1/escalations").status_code == 200


def checksummed(body: str) -> str:
    return body + encode_base62(zlib.crc32(body.encode()), 6)


def test_requests_with_invalid_keys_do_not_spend_a_real_keys_budget(acme):
    key = fresh_agent_key(acme, rate_limit=3)
    key_id = key.split("_")[2]
    forged = checksummed(f"ahk_live_{key_id}_{random_base62(32)}")  # the real key id, wrong secret
    typo = key[:-1] + ("A" if key[-1] != "A" else "B")
    for bad in (forged, typo, "not-a-key") * 5:
        response = get(bad)
        assert response.status_code == 401
        assert "RateLimit" not in response
    answers = [get(key) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 200]
    assert limits(answers[0])[2] == 2


async def wait(key: str, public_id: str) -> dict[str, Any]:
    communicator = HttpCommunicator(
        application,
        "GET",
        f"/api/v1/escalations/{public_id}/wait?timeout=0",
        headers=[(b"authorization", f"Bearer {key}".encode())],
    )
    response = await communicator.get_response(timeout=5)
    await communicator.wait()
    headers = {name.decode(): value.decode() for name, value in response["headers"]}
    return {"status": response["status"], "headers": headers, "body": json.loads(response["body"])}


@pytest.mark.django_db(transaction=True)
async def test_the_wait_endpoint_carries_the_headers_and_spends_the_same_budget(acme, globex):
    key = await sync_to_async(fresh_agent_key)(acme, rate_limit=3)
    mine = (await sync_to_async(create_escalation)(acme))["id"]
    foreign = (await sync_to_async(create_escalation)(globex))["id"]
    found = await wait(key, mine)
    missing = await wait(key, foreign)
    assert (found["status"], missing["status"]) == (200, 404)
    assert limits(found["headers"])[:3] == (3, WINDOW, 2)
    assert limits(missing["headers"])[:3] == (3, WINDOW, 1)
    # The API and the wait endpoint count against one budget.
    assert (await sync_to_async(get)(key)).status_code == 200
    refused = await wait(key, mine)
    assert refused["status"] == 429
    assert refused["headers"]["Content-Type"] == PROBLEM
    assert 0 < int(refused["headers"]["Retry-After"]) <= WINDOW
    assert limits(refused["headers"])[2] == 0


@pytest.mark.django_db(transaction=True)
async def test_a_refused_scope_on_the_wait_endpoint_still_carries_the_headers(acme):
    agent = await sync_to_async(acme.organization.agents.get)()
    issued = await sync_to_async(api_key_create)(
        organization=acme.organization,
        agent=agent,
        actor=SYSTEM_ACTOR,
        scopes=["escalations:write"],
    )
    mine = (await sync_to_async(create_escalation)(acme))["id"]
    refused = await wait(issued.plaintext, mine)
    assert refused["status"] == 403
    limits(refused["headers"])


def test_with_redis_down_limits_are_counted_in_process_and_the_api_keeps_answering(
    acme, monkeypatch, caplog
):
    from tenants import ratelimit
    from tests.live import free_port

    monkeypatch.setattr(ratelimit, "_redis_down_until", 0.0)
    key = fresh_agent_key(acme)
    nobody_listens = f"redis://127.0.0.1:{free_port()}/0"
    with override_settings(REDIS_URL=nobody_listens, RATE_LIMIT_DEFAULT=2):
        answers = [get(key) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert [limits(answer)[2] for answer in answers] == [1, 0, 0]
    assert "Redis unavailable" in caplog.text
    assert caplog.text.count("Redis unavailable") == 1, "Redis is retried after a pause only"


def test_no_burst_of_twice_the_limit_fits_around_a_window_boundary(acme):
    """A fixed window lets 2 × limit through around a boundary; a moving window never does."""
    # Eight seconds, starting two before a boundary: room for eight requests on a loaded machine.
    window, lead = 8, 2
    key = fresh_agent_key(acme, rate_limit=4)
    with override_settings(RATE_LIMIT_WINDOW_SECONDS=window):
        time.sleep((window - lead - time.time() % window) % window)  # two seconds before one
        first = time.time()
        before = [get(key).status_code for _ in range(4)]
        boundary = first - first % window + window
        assert time.time() < boundary, "the first four requests took the last two seconds"
        time.sleep(boundary + 0.05 - time.time())  # just past the boundary
        after = [get(key) for _ in range(4)]
        assert time.time() < first + window, "the eight requests took longer than one window"
    assert before == [200] * 4
    assert [answer.status_code for answer in after] == [429] * 4
    assert all(1 <= int(answer["Retry-After"]) <= window for answer in after)


@pytest.mark.services
def test_two_web_processes_share_one_budget_per_key(tmp_path):
    with production_stack(tmp_path) as stack:
        stack.env["RATE_LIMIT_DEFAULT"] = "4"
        key = stack.organization()["agent_key"]
        first, second = stack.daphne(), stack.daphne()
        headers = {"Authorization": f"Bearer {key}"}
        statuses = [
            httpx.get(f"{base}/api/v1/escalations", headers=headers, timeout=10).status_code
            for base in (first, second, first, second, first, second)
        ]
    assert statuses == [200, 200, 200, 200, 429, 429]
