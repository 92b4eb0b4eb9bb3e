"""The overview's insights in a real browser, against a real daphne: the charts are drawn with
the seeded figures (bars, points, lines, labels), the pending chart follows the live queue
without a reload, the range selector changes the URL, nothing breaks the Content-Security-Policy,
and an operator sees no charts.

Reuses the Chromium fixture of ``test_api_docs`` (headless Debian Chromium; a missing browser
skips locally and fails with ``CI=true``). The screenshot goes to ``docs/screenshots/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.test_api_docs import browser  # noqa: F401  (fixture)
from tests.browser.test_content_security_policy import RECORD_VIOLATIONS
from tests.live import ROOT, embedded_stack

pytestmark = pytest.mark.browser

PASSWORD = "insights-passphrase-42"
SCREENSHOTS = ROOT / "docs" / "screenshots"
DAYS_SEEDED = 5

# Each of the last five days (UTC): one approval by a person (waiting 1, 2, … 5 minutes, on the
# console or by e-mail) and one rejection by a policy; two days ago, one more expired at the
# deadline. Two agents, two actions.
SETUP = """
from datetime import timedelta
from django.utils import timezone
from audit.services import SYSTEM_ACTOR
from escalations.models import Escalation
from tenants.models import Organization
from tenants.services import agent_create, membership_add, user_get_or_create

organization = Organization.objects.get(slug=SLUG)
user = user_get_or_create(email="dana@insights.test", password=PASSWORD)
membership_add(organization=organization, user=user, role="operator", actor=SYSTEM_ACTOR)
bots = [agent_create(organization=organization, name=n, actor=SYSTEM_ACTOR)
        for n in ("refund-bot", "cleanup-bot")]
now = timezone.now()


def row(agent, action, status, decided_at, wait, decided_by, channel=""):
    created_at = decided_at - timedelta(seconds=wait)
    Escalation.objects.create(
        organization=organization, agent=agent, kind="approval", title="Seeded",
        action={"name": action, "arguments": {}}, response_schema={"type": "object"},
        timeout_seconds=3600, on_timeout="reject", created_at=created_at,
        expires_at=created_at + timedelta(hours=1), status=status, decided_at=decided_at,
        decided_by=decided_by, decision_channel=channel)


for i in range(DAYS):
    day = now - timedelta(days=i)
    row(bots[0], "issue_refund", "approved", day, 60 * (i + 1), {"type": "user"},
        "console" if i % 2 == 0 else "email")
    row(bots[1], "delete_customer", "rejected", day, 0, {"type": "policy"})
row(bots[1], "delete_customer", "expired", now - timedelta(days=2), 3600, {"type": "timeout"})
"""


@pytest.fixture(scope="module")
def insights_server(
    browser: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    with embedded_stack(tmp_path_factory.mktemp("insights")) as stack:
        slug = stack.manage(
            "createorg", "Insights Co", "--owner", "olivia@insights.test", "--password", PASSWORD
        )
        setup = f"SLUG = {json.dumps(slug)}\nPASSWORD = {json.dumps(PASSWORD)}\n"
        stack.manage("shell", "-c", f"{setup}DAYS = {DAYS_SEEDED}\n{SETUP}")
        key = stack.manage("createapikey", "--org", slug, "--agent", "refund-bot")
        # The past days as the scheduler's insights-rollup job leaves them (it runs again at
        # start, to the same rows): today is read live, the other days from the rollup.
        stack.manage("insights_rollup")
        yield {"base": stack.daphne(), "agent_key": key}


class Person:
    """Someone signed in in their own browser context, recording script errors."""

    def __init__(self, browser: Any, base: str, email: str) -> None:  # noqa: F811
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.page.add_init_script(RECORD_VIOLATIONS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(f"{base}/account/login/")
        self.page.get_by_label("E-mail").fill(email)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(f"{base}/")

    def violations(self) -> list[str]:
        return self.page.evaluate("window.__cspViolations")


def texts(page: Any, selector: str) -> list[str]:
    return page.locator(selector).all_text_contents()


def test_the_charts_draw_the_seeded_figures_and_the_pending_chart_is_live(
    browser,  # noqa: F811
    insights_server,
):
    from playwright.sync_api import expect

    base = insights_server["base"]
    olivia = Person(browser, base, "olivia@insights.test")
    page = olivia.page
    page.goto(f"{base}/org/overview/?days=7")
    expect(page.locator("#pending-status")).to_have_attribute("data-state", "live")

    # Outcomes: an approved and a rejected bar on each of five days, one expired bar.
    outcomes = page.locator("#chart-outcomes")
    expect(outcomes.locator("rect.bar")).to_have_count(2 * DAYS_SEEDED + 1)
    expect(outcomes.locator('rect[data-series="approved"]')).to_have_count(DAYS_SEEDED)
    expect(outcomes.locator('rect[data-series="expired"]')).to_have_count(1)
    assert texts(page, "#chart-outcomes .legend text") == [
        "Approved",
        "Rejected",
        "Answered",
        "Expired",
        "Cancelled",
    ]
    assert len(texts(page, "#chart-outcomes text.tick.x")) == 7  # one label per day of 7
    assert "11 decided" in outcomes.locator("desc").text_content()
    # Every bar is drawn with a height, inside the plot.
    heights = outcomes.locator("rect.bar").evaluate_all("bars => bars.map(b => b.getBBox().height)")
    assert all(height > 0 for height in heights)

    deciders = page.locator("#chart-deciders")
    expect(deciders.locator('rect[data-series="by-user"]')).to_have_count(DAYS_SEEDED)
    expect(deciders.locator('rect[data-series="by-policy"]')).to_have_count(DAYS_SEEDED)
    expect(deciders.locator('rect[data-series="by-timeout"]')).to_have_count(1)

    # Time to decision: one point per day with a person's decision, for p50 and p90, on lines;
    # today's exact, the rolled-up days' within 5 % (marked "≈").
    waits = page.locator("#chart-waits")
    assert "(≈, within 5%)" in waits.locator("title").first.text_content()
    expect(waits.locator('circle[data-series="p50"]')).to_have_count(DAYS_SEEDED)
    expect(waits.locator("path.line")).to_have_count(2)
    p50 = sorted(float(v) for v in waits.locator('circle[data-series="p50"]').evaluate_all(
        "points => points.map(p => p.dataset.value)"
    ))  # fmt: skip
    assert p50[0] == 60.0
    assert all(
        abs(got - want) <= 0.05 * want
        for got, want in zip(p50, (60, 120, 180, 240, 300), strict=True)
    )

    assert texts(page, "#chart-agents text.label") == ["cleanup-bot", "refund-bot"]
    assert texts(page, "#chart-agents text.value") == ["0% of 5", "100% of 5"]
    assert texts(page, "#chart-actions text.label") == ["delete_customer", "issue_refund"]
    assert texts(page, "#chart-channels text.label") == ["console", "email"]
    assert texts(page, "#chart-channels text.value") == ["3", "2"]
    assert texts(page, "#chart-channel-speed text.value") == ["≈ 3 min", "≈ 3 min"]

    # Live: an agent asks, urgent; the pending chart follows without a reload.
    pending = page.locator("#chart-pending")
    assert texts(page, "#chart-pending text.label") == ["Urgent", "High", "Normal", "Low"]
    expect(pending.locator('[data-value-for="urgent"]')).to_have_text("0")
    response = httpx.post(
        f"{base}/api/v1/escalations",
        json={"kind": "approval", "title": "Wire $9,000", "priority": "urgent"},
        headers={"Authorization": f"Bearer {insights_server['agent_key']}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    expect(pending.locator('[data-value-for="urgent"]')).to_have_text("1", timeout=5000)
    width = pending.locator('rect[data-series="urgent"]').get_attribute("width")
    assert float(width) > 0

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#insights-heading").scroll_into_view_if_needed()
    page.screenshot(path=str(SCREENSHOTS / "insights.png"), full_page=True)

    # The range selector is in the URL.
    page.get_by_test_id("range-30").click()
    page.wait_for_url(f"{base}/org/overview/?days=30")
    expect(page.get_by_test_id("range-30")).to_have_attribute("aria-current", "page")
    expect(page.locator("#chart-outcomes rect.bar")).to_have_count(2 * DAYS_SEEDED + 1)
    assert len(texts(page, "#chart-outcomes text.tick.x")) <= 8

    assert olivia.violations() == []
    assert olivia.errors == []
    olivia.context.close()


def test_an_operator_sees_no_charts(browser, insights_server):  # noqa: F811
    base = insights_server["base"]
    dana = Person(browser, base, "dana@insights.test")
    dana.page.goto(f"{base}/org/overview/?days=7")
    assert dana.page.locator("svg.chart").count() == 0
    assert dana.page.get_by_test_id("pending").inner_text().isdigit()  # today's figures
    assert dana.violations() == [] and dana.errors == []
    dana.context.close()
