"""The Content-Security-Policy holds in a real browser: the console, Django admin, the sign-in
pages and the API docs run under it with no violation reported, and the console's form
behaviours (confirm before revoking, copy a new key) work without inline script.

Reuses the Chromium and server fixtures of ``test_api_docs`` (headless Debian Chromium; a missing
browser skips locally and fails with ``CI=true``).
"""

from __future__ import annotations

import pytest

from tests.browser.test_api_docs import browser, offline, server  # noqa: F401  (fixtures)
from tests.browser.test_console_accounts import sign_up, totp_code

pytestmark = pytest.mark.browser

# Collects what the browser reports; installed before any page script runs.
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI} ${event.sourceFile}`);
});
"""

CONSOLE_PAGES = [
    "/",
    "/org/overview/",
    "/org/agents/",
    "/org/members/",
    "/org/keys/",
    "/org/settings/",
    "/org/audit/",
    "/org/suggestions/",
    "/account/2fa/",
    "/contact-points/",
    "/admin/",
    "/admin/escalations/policy/",
    "/admin/escalations/policy/add/",
    "/admin/tenants/apikey/",
    "/api/docs/",
]


def test_console_admin_and_docs_run_under_the_policy_with_no_violation(server, offline):  # noqa: F811
    from playwright.sync_api import expect

    base, page = server["base"], offline.page
    console: list[str] = []
    page.on(
        "console",
        lambda message: (
            console.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.add_init_script(RECORD_VIOLATIONS)

    response = page.goto(f"{base}/account/login/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    sign_up(page, base, organization="Policy Co", email="owner@policy.test")
    page.goto(f"{base}/account/2fa/setup/")
    secret = page.get_by_test_id("totp-secret").inner_text()
    page.get_by_role("textbox", name="Code").fill(totp_code(secret))
    page.get_by_role("button", name="Turn on").click()

    page.goto(f"{base}/org/agents/")
    page.get_by_label("Name").fill("policy-bot")
    page.get_by_role("button", name="Create agent").click()
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_test_id("new-api-key").inner_text().strip()
    agent_page = page.url

    visited = []
    for path in CONSOLE_PAGES:
        page.goto(f"{base}{path}", wait_until="networkidle")
        visited.append((path, page.evaluate("window.__cspViolations")))
    assert [(path, found) for path, found in visited if found] == []

    # The confirm-before-submit behaviour comes from static/console/forms.js now.
    page.goto(agent_page)
    dialogs: list[str] = []
    page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Revoke").click()
    assert dialogs == ["Revoke this key? Anything using it stops working at once."]
    expect(page.locator("table")).not_to_contain_text("revoked")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("table")).to_contain_text("revoked")
    assert key.startswith("ahk_live_")

    assert console == []
    assert page.evaluate("window.__cspViolations") == []
    assert offline.errors == []
