"""End to end on real processes: timers in both run modes, and a wake that crosses processes."""

from __future__ import annotations

import threading
from datetime import datetime

import httpx
import pytest

from tests.live import embedded_stack, production_stack

REQUEST = {
    "kind": "approval",
    "title": "Delete customer 7",
    "action": {"name": "delete_customer", "arguments": {"id": 7}},
    "timeout_seconds": 1,
    "on_timeout": "reject",
}


def _create(base: str, key: str, **overrides: object) -> dict:
    response = httpx.post(
        f"{base}/api/v1/escalations",
        json={**REQUEST, **overrides},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def _wait(base: str, key: str, public_id: str, seconds: float) -> dict:
    response = httpx.get(
        f"{base}/api/v1/escalations/{public_id}/wait",
        params={"timeout": seconds},
        headers={"Authorization": f"Bearer {key}"},
        timeout=seconds + 10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def _lateness(escalation: dict) -> float:
    decided = datetime.fromisoformat(escalation["decision"]["decided_at"])
    expires = datetime.fromisoformat(escalation["expires_at"])
    return (decided - expires).total_seconds()


def _assert_timed_out_on_time(escalation: dict) -> None:
    assert escalation["status"] == "rejected"
    assert escalation["decision"]["decided_by"] == {"type": "timeout", "on_timeout": "reject"}
    # The contract: on_timeout applies within 2 s of the deadline, never before it.
    assert 0 <= _lateness(escalation) <= 2


def test_embedded_server_applies_on_timeout_within_two_seconds(tmp_path):
    with embedded_stack(tmp_path) as stack:
        org = stack.organization()
        base = stack.daphne()
        created = _create(base, org["agent_key"])
        _assert_timed_out_on_time(_wait(base, org["agent_key"], created["id"], 10))


@pytest.mark.services
def test_celery_beat_applies_on_timeout_within_two_seconds(tmp_path):
    with production_stack(tmp_path) as stack:
        org = stack.organization()
        base = stack.daphne()
        stack.celery()
        created = _create(base, org["agent_key"], timeout_seconds=3)
        _assert_timed_out_on_time(_wait(base, org["agent_key"], created["id"], 20))


@pytest.mark.services
def test_decision_on_one_process_wakes_a_waiter_on_another(tmp_path):
    with production_stack(tmp_path) as stack:
        org = stack.organization()
        process_a, process_b = stack.daphne(), stack.daphne()
        created = _create(process_a, org["agent_key"], timeout_seconds=600)
        result: dict = {}
        waiter = threading.Thread(
            target=lambda: result.update(_wait(process_a, org["agent_key"], created["id"], 30))
        )
        waiter.start()
        # The waiter is parked on A; give it time to subscribe, then decide through B.
        waiter.join(timeout=1)
        assert waiter.is_alive()
        answer = httpx.post(
            f"{process_b}/api/v1/escalations/{created['id']}/responses",
            json={"outcome": "approve", "comment": "from B"},
            headers={"Authorization": f"Bearer {org['operator_key']}"},
            timeout=10,
        )
        assert answer.status_code == 201, answer.text
        waiter.join(timeout=10)
        assert not waiter.is_alive(), "the waiter on process A was not woken"
        assert result["status"] == "approved"
        assert result["decision"]["comment"] == "from B"
