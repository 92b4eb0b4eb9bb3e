"""/metrics in one process (the embedded default): who may scrape, and the figures that move
when an escalation is created, answered, refused by the rate limit. The same figures summed over
several processes: tests/ops/test_metrics_processes.py."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from escalations.models import Policy
from tests.conftest import create_escalation
from tests.live import ROOT

TOKEN = "scrape-token-for-the-tests-0123456789"


def scrape(client: Client | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = (client or Client()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(autouse=True)
def _token(settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOW_FROM = []


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x"]
)
def test_scrape_without_the_token_is_refused(db, authorization):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    response = Client().get("/metrics", **headers)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert "METRICS_TOKEN" in response.json()["detail"]
    assert b"awaithuman_" not in response.content


def test_with_neither_token_nor_allow_list_nobody_scrapes(db, settings):
    settings.METRICS_TOKEN = ""
    assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401


def test_an_address_on_the_allow_list_scrapes_without_a_token(db, settings):
    settings.METRICS_ALLOW_FROM = ["10.0.0.0/8", "127.0.0.1"]
    assert Client().get("/metrics").status_code == 200
    settings.METRICS_ALLOW_FROM = ["10.0.0.0/8"]
    assert Client().get("/metrics").status_code == 401


def test_create_and_answer_move_the_escalation_figures(acme, django_capture_on_commit_callbacks):
    before = scrape()
    with django_capture_on_commit_callbacks(execute=True):
        created = create_escalation(acme, priority="high")
    during = scrape()
    assert value(
        during, "awaithuman_escalations_created_total", policy_outcome="require_human"
    ) == (value(before, "awaithuman_escalations_created_total", policy_outcome="require_human") + 1)
    assert value(during, "awaithuman_escalations_pending", priority="high") == 1
    assert value(during, "awaithuman_escalations_pending", priority="normal") == 0

    with django_capture_on_commit_callbacks(execute=True):
        answered = acme.client_for("bob").post(
            f"/api/v1/escalations/{created['id']}/responses", {"outcome": "approve"}, format="json"
        )
    assert answered.status_code == 201, answered.content
    after = scrape()
    decided = {"outcome": "approved", "decided_by": "user"}
    assert value(after, "awaithuman_escalations_decided_total", **decided) == (
        value(before, "awaithuman_escalations_decided_total", **decided) + 1
    )
    histogram = "awaithuman_escalation_time_to_decision_seconds_count"
    assert (
        value(after, histogram, decided_by="user")
        == value(before, histogram, decided_by="user") + 1
    )
    assert value(after, "awaithuman_escalations_pending", priority="high") == 0


def test_an_auto_decided_create_counts_under_its_policy_outcome(
    acme, django_capture_on_commit_callbacks
):
    Policy.objects.create(
        organization=acme.organization, name="Small refunds", condition="true",
        outcome="auto_approve",
    )  # fmt: skip
    before = scrape()
    with django_capture_on_commit_callbacks(execute=True):
        create_escalation(acme)
    after = scrape()
    name = "awaithuman_escalations_created_total"
    assert value(after, name, policy_outcome="auto_approve") == (
        value(before, name, policy_outcome="auto_approve") + 1
    )
    decided = {"outcome": "approved", "decided_by": "policy"}
    assert value(after, "awaithuman_escalations_decided_total", **decided) == (
        value(before, "awaithuman_escalations_decided_total", **decided) + 1
    )


def test_requests_are_timed_by_route_pattern_never_by_id(acme):
    created = create_escalation(acme)
    acme.agent_client().get(f"/api/v1/escalations/{created['id']}")
    samples = scrape()
    route = "api/v1/escalations/<str:public_id>"
    count = "awaithuman_http_request_duration_seconds_count"
    assert value(samples, count, route=route, method="GET", status="200") >= 1
    assert value(samples, count, route="api/v1/escalations", method="POST", status="201") >= 1
    assert all(created["id"] not in str(labels) for _, labels in samples)


def test_a_refusal_by_the_rate_limit_is_counted(acme, settings):
    settings.RATE_LIMIT_DEFAULT = 1
    client = acme.agent_client()
    before = value(scrape(), "awaithuman_rate_limit_refusals_total")
    assert client.get("/api/v1/escalations").status_code == 200
    assert client.get("/api/v1/escalations").status_code == 429
    assert value(scrape(), "awaithuman_rate_limit_refusals_total") == before + 1


def test_organizations_are_labels_only_when_the_operator_opts_in(acme):
    samples = scrape()
    assert all("organization" not in dict(labels) for _, labels in samples)


def test_the_grafana_dashboard_reads_only_metrics_that_exist(acme):
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    used = {
        re.sub(r"_(bucket|count|sum)$", "", name)
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"awaithuman_\w+", target["expr"])
    }
    response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    families = text_string_to_metric_families(response.content.decode())
    exposed = {family.name for family in families}
    # Counters are exposed as their family name and read as <name>_total.
    assert {name.removesuffix("_total") for name in used} <= exposed
    assert len(used) >= 14
