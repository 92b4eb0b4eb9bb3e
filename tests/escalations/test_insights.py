"""Insights: the figures for a seeded set of escalations, computed again here from the rows
the test creates; another organization's escalations never counted; admins and owners only (the
console page and the API); bad input is a 400 naming ``days``.

Runs on SQLite (percentiles interpolated in Python) and on PostgreSQL (``percentile_cont``)
against the same expectations.
"""

from __future__ import annotations

import random
import re
import statistics
from collections import Counter, defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from escalations.insights import organization_insights
from escalations.models import Escalation
from tests.conftest import Tenant

from ..console.helpers import signed_in

pytestmark = pytest.mark.django_db

AGENTS = ("support-bot", "billing-bot", "ops-bot")
ACTIONS = ("issue_refund", "delete_customer", "send_email", None)
CHANNELS = ("console", "email", "slack", "api")
DECIDERS = ("user", "user", "user", "policy", "timeout", "agent")
STATUS_OF = {
    "user": ("approved", "rejected", "answered"),
    "policy": ("approved", "rejected"),
    "timeout": ("rejected", "expired", "approved"),
    "agent": ("cancelled",),
}


def make(tenant: Tenant, **fields: Any) -> Escalation:
    """An escalation row as the services leave it (the read side is what is under test)."""
    created_at = fields.pop("created_at", timezone.now())
    agent_name = fields.pop("agent", "support-bot")
    agent = tenant.organization.agents.get_or_create(name=agent_name)[0]
    return Escalation.objects.create(
        organization=tenant.organization,
        agent=agent,
        kind=fields.pop("kind", "approval"),
        title="Seeded",
        response_schema={"type": "object"},
        timeout_seconds=3600,
        on_timeout="reject",
        created_at=created_at,
        expires_at=created_at + timedelta(hours=1),
        **fields,
    )


def seed(tenant: Tenant, now: datetime, count: int, rng: random.Random) -> list[Escalation]:
    """``count`` escalations over the last 12 days (some before a 7-day range), a sixth pending."""
    rows = []
    for n in range(count):
        created_at = now - timedelta(days=rng.uniform(0, 12))
        action = rng.choice(ACTIONS)
        fields: dict[str, Any] = {
            "created_at": created_at,
            "agent": rng.choice(AGENTS),
            "priority": rng.choice(("low", "normal", "normal", "high", "urgent")),
            "action": {"name": action, "arguments": {"n": n}} if action else None,
        }
        if n % 6 == 0:
            rows.append(make(tenant, **fields))
            continue
        decider = rng.choice(DECIDERS)
        wait = rng.randint(1, 5000) if decider != "policy" else 0
        decided_at = min(now, created_at + timedelta(seconds=wait))
        rows.append(
            make(
                tenant,
                **fields,
                status=rng.choice(STATUS_OF[decider]),
                decided_at=decided_at,
                decided_by={"type": decider, "id": "x"},
                decision_channel=rng.choice(CHANNELS) if decider == "user" else "",
            )
        )
    return rows


def expected(rows: list[Escalation], now: datetime, days: int) -> dict[str, Any]:
    """The figures, from the rows in Python, by the definitions in docs (README, Insights)."""
    first = now.date() - timedelta(days=days - 1)
    decided = [e for e in rows if e.decided_at is not None and e.decided_at.date() >= first]
    outcomes: dict[date, Counter[str]] = defaultdict(Counter)
    deciders: dict[date, Counter[str]] = defaultdict(Counter)
    waits: dict[date, list[float]] = defaultdict(list)
    channels: dict[str, list[float]] = defaultdict(list)
    agents: dict[str, Counter[str]] = defaultdict(Counter)
    actions: dict[str, Counter[str]] = defaultdict(Counter)
    for e in decided:
        day = e.decided_at.date()
        outcomes[day][e.status] += 1
        deciders[day][e.decided_by["type"]] += 1
        if e.decided_by["type"] == "user":
            seconds = (e.decided_at - e.created_at).total_seconds()
            waits[day].append(seconds)
            channels[e.decision_channel].append(seconds)
        if e.status in ("approved", "rejected"):
            agents[e.agent.name][e.status] += 1
            actions[(e.action or {}).get("name") or "(no action)"][e.status] += 1

    def p90(values: list[float]) -> float:
        if len(values) == 1:
            return values[0]
        return statistics.quantiles(values, n=10, method="inclusive")[-1]

    return {
        "outcomes": {d: dict(c) for d, c in outcomes.items()},
        "deciders": {d: dict(c) for d, c in deciders.items()},
        "waits": {d: (len(v), statistics.median(v), p90(v)) for d, v in waits.items()},
        "channels": {c: (len(v), statistics.median(v)) for c, v in channels.items()},
        "agents": {a: (c["approved"], c["rejected"]) for a, c in agents.items()},
        "actions": {a: (c["approved"], c["rejected"]) for a, c in actions.items()},
        "pending": Counter(e.priority for e in rows if e.status == "pending"),
    }


@pytest.fixture
def seeded(acme: Tenant, globex: Tenant) -> tuple[datetime, list[Escalation]]:
    now = timezone.now()
    rows = seed(acme, now, 150, random.Random(15))
    seed(globex, now, 80, random.Random(16))  # never counted for acme
    return now, rows


@pytest.mark.parametrize("days", [7, 30])
def test_the_figures_match_the_rows(acme, seeded, days):
    now, rows = seeded
    want = expected(rows, now, days)
    got = organization_insights(organization=acme.organization, days=days, now=now)

    assert [d.day for d in got.daily] == [
        now.date() - timedelta(days=days - 1 - n) for n in range(days)
    ]
    assert {d.day: d.outcomes for d in got.daily if d.outcomes} == want["outcomes"]
    assert {d.day: d.deciders for d in got.daily if d.deciders} == want["deciders"]
    waits = {d.day: (d.wait.decisions, d.wait.p50, d.wait.p90) for d in got.daily if d.wait.p50}
    assert waits.keys() == want["waits"].keys()
    for day, (n, p50, p90) in want["waits"].items():
        assert waits[day] == (n, pytest.approx(p50, abs=0.01), pytest.approx(p90, abs=0.01))
    channels = {c.channel: (c.decisions, c.median_seconds) for c in got.channels}
    assert channels.keys() == want["channels"].keys()
    for channel, (n, median) in want["channels"].items():
        assert channels[channel] == (n, pytest.approx(median, abs=0.01))
    assert {r.label: (r.approved, r.rejected) for r in got.agents} == want["agents"]
    assert {r.label: (r.approved, r.rejected) for r in got.actions} == want["actions"]
    assert got.pending == {p: want["pending"][p] for p in ("urgent", "high", "normal", "low")}
    # Busiest first, then by name.
    assert [r.total for r in got.agents] == sorted((r.total for r in got.agents), reverse=True)
    assert got.decided == sum(sum(c.values()) for c in want["outcomes"].values())


def test_another_organization_is_never_counted(acme, globex, seeded):
    now, _ = seeded
    before = organization_insights(organization=globex.organization, days=30, now=now)
    make(
        acme,
        status="approved",
        decided_at=now,
        created_at=now - timedelta(seconds=5),
        decided_by={"type": "user"},
        decision_channel="sms",
        agent="acme-only-bot",
    )
    make(acme, priority="urgent")
    after = organization_insights(organization=globex.organization, days=30, now=now)
    assert after == before
    assert "sms" not in {c.channel for c in after.channels}
    assert "acme-only-bot" not in {r.label for r in after.agents}
    mine = organization_insights(organization=acme.organization, days=30, now=now)
    assert "sms" in {c.channel for c in mine.channels}


def test_an_empty_organization_has_zeroes_and_no_percentiles(globex):
    got = organization_insights(organization=globex.organization, days=7)
    assert len(got.daily) == 7 and got.decided == 0
    assert all(d.wait.p50 is None for d in got.daily)
    assert got.agents == got.actions == got.channels == []
    assert got.pending == {"urgent": 0, "high": 0, "normal": 0, "low": 0}


# --- The console page -----------------------------------------------------------------------------


def test_owners_see_the_charts_with_a_bar_per_day_and_series(acme, seeded):
    now, rows = seeded
    page = signed_in(acme.members["alice"].user).get("/org/overview/?days=7").content.decode()
    want = expected(rows, now, 7)
    outcomes = page.split('id="chart-outcomes"')[1].split("</svg>")[0]
    bars = re.findall(r'data-series="(\w+)" data-day="([\d-]+)" data-value="(\d+)"', outcomes)
    drawn: dict[date, dict[str, int]] = defaultdict(dict)
    for status, day, value in bars:
        drawn[date.fromisoformat(day)][status] = int(value)
    assert drawn == want["outcomes"]
    for chart in ("deciders", "waits", "agents", "actions", "channels", "channel-speed"):
        assert f'id="chart-{chart}"' in page
    assert 'aria-current="page" data-testid="range-7"' in page
    pending = page.split('id="chart-pending"')[1].split("</svg>")[0]
    for priority in ("urgent", "high", "normal", "low"):
        value = re.search(rf'data-value-for="{priority}">(\d+)<', pending).group(1)
        assert int(value) == want["pending"][priority]


def test_agent_text_in_a_chart_is_escaped(acme):
    now = timezone.now()
    make(
        acme,
        status="approved",
        decided_at=now,
        created_at=now - timedelta(seconds=3),
        decided_by={"type": "user"},
        action={"name": "<script>alert(1)</script>"},
    )
    page = signed_in(acme.members["alice"].user).get("/org/overview/").content.decode()
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)" in page


@pytest.mark.parametrize("person", ["bob", "vera"])
def test_operators_and_viewers_keep_todays_overview(acme, seeded, person):
    client = signed_in(acme.members[person].user)
    page = client.get("/org/overview/?days=7").content.decode()
    assert "Insights" not in page and "<svg" not in page and "insights.js" not in page
    assert 'data-testid="pending"' in page
    assert client.get("/org/overview/pending.json").status_code == 403


@pytest.mark.parametrize("days", ["abc", "0", "91", "-3", "7.5", ""])
def test_a_bad_range_in_the_console_is_a_400_naming_days(acme, days):
    response = signed_in(acme.members["alice"].user).get(f"/org/overview/?days={days}")
    assert response.status_code == 400
    error = re.search(r'data-testid="days-error">days: Give a whole number', response.text)
    assert error is not None


def test_the_live_chart_endpoint_counts_pending_by_priority(acme, globex):
    make(acme, priority="high")
    make(acme, priority="high")
    make(acme, priority="low", status="approved", decided_at=timezone.now())
    make(globex, priority="urgent")
    response = signed_in(acme.members["alice"].user).get("/org/overview/pending.json")
    assert response.status_code == 200
    assert response.json() == {"pending": {"urgent": 0, "high": 2, "normal": 0, "low": 0}}


# --- The API --------------------------------------------------------------------------------------


def test_the_api_gives_the_same_figures(acme, seeded):
    now, rows = seeded
    response = acme.client_for("alice").get("/api/v1/insights?days=7")
    assert response.status_code == 200, response.content
    body = response.json()
    want = expected(rows, now, 7)
    assert body["days"] == 7
    assert len(body["daily"]) == 7
    assert {
        date.fromisoformat(d["date"]): {k: v for k, v in d["outcomes"].items() if v}
        for d in body["daily"]
        if d["decided"]
    } == want["outcomes"]
    for day in body["daily"]:
        wait = want["waits"].get(date.fromisoformat(day["date"]))
        if wait is None:
            assert day["time_to_decision"] == {"decisions": 0, "p50": None, "p90": None}
        else:
            assert day["time_to_decision"]["decisions"] == wait[0]
            assert day["time_to_decision"]["p50"] == pytest.approx(wait[1], abs=0.01)
    assert {a["name"]: (a["approved"], a["rejected"]) for a in body["agents"]} == want["agents"]
    assert {c["channel"]: c["decisions"] for c in body["channels"]} == {
        c: n for c, (n, _) in want["channels"].items()
    }
    assert body["pending"] == {p: want["pending"][p] for p in ("urgent", "high", "normal", "low")}


@pytest.mark.parametrize("who", ["bob", "vera", "agent"])
def test_the_api_is_for_admins_and_owners_personal_keys(acme, who):
    client = acme.agent_client() if who == "agent" else acme.client_for(who)
    response = client.get("/api/v1/insights")
    assert response.status_code == 403
    assert response["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("days=abc", "days"),
        ("days=0", "days"),
        ("days=91", "days"),
        ("days=", "days"),
        ("days=30&agent=x", "agent"),
        ("since=2026-01-01", "since"),
    ],
)
def test_bad_api_input_is_a_400_naming_the_field(acme, query, field):
    response = acme.client_for("alice").get(f"/api/v1/insights?{query}")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert list(body["errors"]) == [field]
    assert field in body["detail"]


def test_the_api_is_in_the_openapi_schema(acme):
    schema = acme.client_for("alice").get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/insights"]["get"]
    assert operation["operationId"] == "insights_read"
    assert [p["name"] for p in operation["parameters"]] == ["days"]
    assert "200" in operation["responses"] and "400" in operation["responses"]
