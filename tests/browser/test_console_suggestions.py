"""Policy suggestions in a real browser, against a real daphne: an owner signs up and turns on
two-factor (Django admin's policy editor requires it), people's past decisions are seeded, the
suggestions page offers the rule they always followed, and one click opens it in the policy
editor as a disabled draft.

Reuses the Chromium fixtures of ``test_api_docs`` (headless Debian Chromium; a missing browser
skips locally and fails with ``CI=true``). The screenshot goes to ``docs/screenshots/``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.test_api_docs import browser, offline  # noqa: F401  (fixtures)
from tests.browser.test_console_accounts import sign_up, totp_code
from tests.live import ROOT, Stack, embedded_stack

pytestmark = pytest.mark.browser

SCREENSHOT = ROOT / "docs" / "screenshots" / "awaithuman-suggestions.png"
OWNER = "owner@suggest.test"

# Run by ``manage.py shell`` in the server's database: an agent, an operator, and the operator's
# decisions (every refund up to $300 approved, larger ones rejected).
SEED = """
from audit.services import SYSTEM_ACTOR
from tenants.models import Organization
from tenants.services import agent_create, membership_add, user_get_or_create
from tests.suggestions.history import decided
organization = Organization.objects.get(memberships__user__email=OWNER)
agent = agent_create(organization=organization, name="support-bot", actor=SYSTEM_ACTOR)
bob = membership_add(
    organization=organization, user=user_get_or_create(email="bob@suggest.test"),
    role="operator", actor=SYSTEM_ACTOR,
)
decided(organization, agent, [10, 25, 40, 60, 80, 100, 120, 150, 200, 250, 280, 300],
        status="approved", by=bob)
decided(organization, agent, [500, 900], status="rejected", by=bob)
"""


@pytest.fixture(scope="module")
def stack(
    browser: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Stack, str]]:
    with embedded_stack(tmp_path_factory.mktemp("suggestions")) as running:
        yield running, running.daphne()


def test_a_suggestion_from_past_decisions_opens_in_the_editor_as_a_draft(stack, offline):  # noqa: F811
    from playwright.sync_api import expect

    (server, base), page = stack, offline.page
    sign_up(page, base, organization="Suggest Co", email=OWNER)
    page.goto(f"{base}/account/2fa/setup/")
    secret = page.get_by_test_id("totp-secret").inner_text()
    page.get_by_role("textbox", name="Code").fill(totp_code(secret))
    page.get_by_role("button", name="Turn on").click()
    page.wait_for_load_state()
    server.manage("shell", "-c", f"OWNER = {json.dumps(OWNER)}\n{SEED}")

    page.goto(f"{base}/org/suggestions/")
    suggestion = page.get_by_test_id("suggestion")
    expect(suggestion).to_have_count(1)
    expect(suggestion).to_contain_text(
        "12 of 12 issue_refund with amount ≤ 300 from support-bot were approved by people"
    )
    expect(suggestion.get_by_test_id("dry-run")).to_contain_text("none went the other way")
    condition = suggestion.get_by_test_id("condition").inner_text()
    assert condition.endswith('action.name == "issue_refund" && action.arguments.amount <= 300')
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    suggestion.get_by_role("button", name="Review as a draft policy").click()
    page.wait_for_url("**/admin/escalations/policy/*/change/")
    expect(page.locator("#id_condition")).to_have_value(condition)
    expect(page.locator("#id_enabled")).not_to_be_checked()
    expect(page.locator("#id_outcome")).to_have_value("auto_approve")

    # Back on the page, the suggestion now points at its draft instead of making another.
    page.goto(f"{base}/org/suggestions/")
    expect(page.get_by_test_id("suggestion")).to_contain_text("(draft)")
    assert offline.errors == []
