"""The insights' per-day rollup (escalations.rollup): once finished days are rolled up, the
insights give the same counts and approval rates as the live queries, and percentiles within the
stated bound (5 %, or 0.1 s); a rerun changes nothing; a late decision on a rolled-up day is
counted at the next run; days not rolled up are read live; organizations stay apart.

Runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from escalations import rollup
from escalations.insights import Insights, organization_insights, percentile_cont
from escalations.models import InsightDay, InsightRollupDay, InsightWait
from tests.conftest import Tenant

from ..console.helpers import signed_in
from .test_insights import make, seed

pytestmark = pytest.mark.django_db


def counts(got: Insights) -> dict[str, Any]:
    """Every exact figure of the insights."""
    return {
        "outcomes": {d.day: d.outcomes for d in got.daily},
        "deciders": {d.day: d.deciders for d in got.daily},
        "waits": {d.day: d.wait.decisions for d in got.daily},
        "agents": [(r.key, r.label, r.approved, r.rejected) for r in got.agents],
        "actions": [(r.key, r.label, r.approved, r.rejected) for r in got.actions],
        "channels": sorted((c.channel, c.decisions) for c in got.channels),
        "pending": got.pending,
    }


def close(approximate: float | None, exact: float | None) -> bool:
    """Within the rollup's stated bound of the exact figure."""
    if exact is None or approximate is None:
        return exact is approximate
    return abs(approximate - exact) <= max((rollup.RATIO - 1) * exact, rollup.FLOOR_SECONDS) + 1e-6


def assert_same(rolled: Insights, live: Insights) -> None:
    assert counts(rolled) == counts(live)
    for r, x in zip(rolled.daily, live.daily, strict=True):
        assert close(r.wait.p50, x.wait.p50) and close(r.wait.p90, x.wait.p90), (r, x)
    exact = {c.channel: c.median_seconds for c in live.channels}
    for channel in rolled.channels:
        assert close(channel.median_seconds, exact[channel.channel]), channel


@pytest.fixture
def seeded(acme: Tenant, globex: Tenant) -> datetime:
    now = timezone.now()
    seed(acme, now, 300, random.Random(21))
    seed(globex, now, 120, random.Random(22))
    return now


@pytest.mark.parametrize("days", [7, 30])
def test_the_rollup_gives_the_live_figures(acme, seeded, days):
    live = organization_insights(organization=acme.organization, days=days, now=seeded)
    assert rollup.insights_rollup() == rollup.WINDOW_DAYS
    assert InsightDay.objects.exists() and InsightWait.objects.exists()
    rolled = organization_insights(organization=acme.organization, days=days, now=seeded)
    assert_same(rolled, live)
    # Finished days are read from the rollup: the approximate percentiles differ somewhere.
    assert [d.wait for d in rolled.daily] != [d.wait for d in live.daily]


def test_a_day_not_rolled_up_is_read_live(acme, seeded):
    live = organization_insights(organization=acme.organization, days=30, now=seeded)
    three_days_ago = seeded.date() - timedelta(days=3)
    assert rollup.insights_rollup(day=three_days_ago) == 1
    assert rollup.insights_rollup(day=seeded.date()) == 0  # today is never rolled up
    assert list(InsightRollupDay.objects.values_list("day", flat=True)) == [three_days_ago]
    assert_same(organization_insights(organization=acme.organization, days=30, now=seeded), live)


def test_a_rerun_changes_nothing(acme, seeded):
    def rows() -> list[tuple[Any, ...]]:
        return sorted(
            [
                *InsightDay.objects.values_list(*FIELDS_DAY),
                *InsightWait.objects.values_list(*FIELDS_WAIT),
            ],
            key=repr,
        )

    rollup.insights_rollup()
    first, figures = rows(), organization_insights(organization=acme.organization, now=seeded)
    rollup.insights_rollup()
    call_command("insights_rollup", since=(seeded.date() - timedelta(days=20)).isoformat())
    assert rows() == first
    assert organization_insights(organization=acme.organization, now=seeded) == figures


FIELDS_DAY = ("organization", "day", "agent", "action_name", "decision_channel", "status", "count")
FIELDS_WAIT = ("organization", "day", "decision_channel", "bucket", "count")


def test_a_late_decision_on_a_rolled_up_day_counts_after_the_next_run(acme, seeded):
    rollup.insights_rollup()
    yesterday = datetime.combine(seeded.date() - timedelta(days=1), datetime.min.time(), UTC)
    before = organization_insights(organization=acme.organization, days=7, now=seeded)
    make(
        acme,
        status="approved",
        created_at=yesterday + timedelta(hours=1),
        decided_at=yesterday + timedelta(hours=2),
        decided_by={"type": "timeout"},
        agent="late-bot",
    )
    stale = organization_insights(organization=acme.organization, days=7, now=seeded)
    assert stale.decided == before.decided  # the rolled-up day is not re-read live
    rollup.insights_rollup()
    after = organization_insights(organization=acme.organization, days=7, now=seeded)
    assert after.decided == before.decided + 1
    assert after.daily[-2].deciders["timeout"] == before.daily[-2].deciders.get("timeout", 0) + 1
    assert ("late-bot", 1, 0) in {(r.label, r.approved, r.rejected) for r in after.agents}


def test_organizations_stay_apart(acme, globex, seeded):
    live = {
        tenant.organization: organization_insights(
            organization=tenant.organization, days=30, now=seeded
        )
        for tenant in (acme, globex)
    }
    assert counts(live[acme.organization]) != counts(live[globex.organization])
    rollup.insights_rollup()
    for organization, figures in live.items():
        rolled = organization_insights(organization=organization, days=30, now=seeded)
        assert_same(rolled, figures)
    assert set(InsightDay.objects.values_list("organization", flat=True)) == {
        acme.organization.pk,
        globex.organization.pk,
    }


@pytest.mark.parametrize("seed_value", range(5))
def test_histogram_percentiles_are_within_the_bound(seed_value):
    rng = random.Random(seed_value)
    waits = sorted(rng.lognormvariate(4, 2.5) for _ in range(rng.randint(1, 400)))
    waits[: rng.randint(0, 3)] = [0.0, 0.05, 0.002][: rng.randint(0, 3)]
    waits.sort()
    histogram: dict[int, int] = {}
    for wait in waits:
        histogram[rollup.bucket_of(wait)] = histogram.get(rollup.bucket_of(wait), 0) + 1
    for fraction in (0.0, 0.1, 0.5, 0.9, 0.99, 1.0):
        assert close(
            rollup.histogram_percentile(histogram, fraction), percentile_cont(waits, fraction)
        )
    assert rollup.histogram_percentile({}, 0.5) is None


def test_the_job_runs_every_ten_minutes():
    entry = settings.CELERY_BEAT_SCHEDULE["insights-rollup"]
    assert entry["task"] == "escalations.tasks.insights_rollup_task"
    assert entry["schedule"] == 600.0


def test_the_charts_mark_approximate_percentiles(acme, seeded):
    def page() -> str:
        client = signed_in(acme.members["alice"].user)
        return client.get("/org/overview/?days=30").content.decode()

    assert "≈" not in page()  # all live: exact
    rollup.insights_rollup()
    speed = page().split('id="chart-channel-speed"')[1].split("</svg>")[0]
    assert "≈ " in speed
    assert "(≈, within 5%)" in page()


def test_the_command_names_a_bad_date():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--since"):
        call_command("insights_rollup", since="2026-13-01")
