"""The SDK outlasts what real deployments do to it: a server restart in the middle of a wait,
and a storm of 429s from a tight per-key rate limit. Each test has its own server and takes
most of a minute of real time: they are marked slow (CI runs them; ``make test`` does not).
Both run with the blocking and the async client."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.live import embedded_stack
from tests.sdk.clients import Clients
from tests.sdk.conftest import REFUND, Background, start_live

FLAVOURS = pytest.mark.parametrize("flavour", ["sync", "async"])


@pytest.mark.slow
@FLAVOURS
def test_the_sdk_survives_a_server_restart_mid_wait(tmp_path, flavour):
    with embedded_stack(tmp_path) as stack, Clients(start_live(stack), flavour) as clients:
        live = clients.live
        daphne = stack.processes[-1]
        port = urlsplit(live.base).port
        polls: list[int] = []
        client = clients.new(on_response=lambda response: polls.append(response.status_code))
        waiting = Background(lambda: client.request_approval(REFUND, external_id="restart-1"))
        escalation = live.operator.pending(external_id="restart-1")
        time.sleep(1)  # the SDK is parked in a long-poll on the first process

        daphne.terminate()
        daphne.wait(timeout=15)
        time.sleep(2)  # the SDK's reconnects fail while nothing listens
        assert waiting.thread.is_alive()
        assert stack.daphne(port=port) == live.base

        approved = live.operator.approve(escalation["id"], comment="after the restart")
        decision = waiting.result(timeout=30)

        assert decision.approved
        assert decision.escalation_id == approved["id"]
        assert decision.comment == "after the restart"
        # Only one escalation: the SDK resumed waiting instead of asking again.
        assert [e.id for e in client.list(external_id="restart-1")] == [escalation["id"]]


@pytest.mark.slow
@FLAVOURS
def test_a_429_storm_is_ridden_out_without_duplicates(tmp_path, flavour):
    # 5 requests per 2-second window per key, for the agent and the operator alike.
    with (
        embedded_stack(tmp_path) as stack,
        Clients(
            start_live(stack, RATE_LIMIT_DEFAULT="5", RATE_LIMIT_WINDOW_SECONDS="2"), flavour
        ) as clients,
    ):
        live = clients.live
        statuses: list[int] = []
        lock = threading.Lock()

        def record(response: httpx.Response) -> None:
            with lock:
                statuses.append(response.status_code)

        # With the async client, the eight agents below are eight coroutines on one loop.
        client = clients.new(max_retries=20, on_response=record)
        agents = [
            Background(
                lambda n=n: client.request_approval(
                    {"name": "issue_refund", "arguments": {"order": n, "amount": 600}},
                    external_id=f"storm-{n}",
                )
            )
            for n in range(8)
        ]

        def operator_approves_everything() -> None:
            operator = live.operator
            for n in range(8):
                operator.approve(operator.pending(external_id=f"storm-{n}", timeout=60)["id"])

        human = Background(operator_approves_everything)
        human.result(timeout=120)
        decisions = [agent.result(timeout=120) for agent in agents]

        assert all(decision.approved for decision in decisions)
        assert statuses.count(429) >= 3, statuses  # it really was a storm
        for n in range(8):
            assert len(list(client.list(external_id=f"storm-{n}"))) == 1
        assert {d.arguments["order"] for d in decisions} == set(range(8))
        assert REFUND["name"] == "issue_refund"
