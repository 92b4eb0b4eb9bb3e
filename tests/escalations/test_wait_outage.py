"""A long-poll keeps its word while Redis is away: it answers at its timeout with the current
state read from the database, never later and never with an empty body."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.live import production_stack, redis_process

pytestmark = pytest.mark.services


def test_a_wait_returns_at_its_timeout_with_the_escalation_while_redis_is_down(
    tmp_path: Path,
) -> None:
    with redis_process(tmp_path) as redis, production_stack(tmp_path, redis_url=redis.url) as stack:
        org = stack.organization()
        base = stack.daphne()
        headers = {"Authorization": f"Bearer {org['agent_key']}"}
        created = httpx.post(
            f"{base}/api/v1/escalations",
            json={"kind": "approval", "title": "Refund $750"},
            headers=headers,
            timeout=10,
        ).json()

        redis.stop()
        for _ in range(2):  # the first wait after the outage, and one with the outage known
            started = time.monotonic()
            response = httpx.get(
                f"{base}/api/v1/escalations/{created['id']}/wait?timeout=2",
                headers=headers,
                timeout=30,
            )
            took = time.monotonic() - started
            assert response.status_code == 200, response.text
            assert response.json()["id"] == created["id"]
            assert response.json()["status"] == "pending"
            # Its timeout plus a margin for a loaded machine, not the 11 s it used to take.
            assert took < 2 + 3, (took, stack.output())
