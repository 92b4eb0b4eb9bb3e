"""Accounts in a real browser against a real daphne: sign up, turn on two-factor, create an agent
and its key and use the key; invite an operator who signs up from the link and lands in the
organization.

Reuses the Chromium and server fixtures of ``test_api_docs`` (headless Debian Chromium; a missing
browser skips locally and fails with ``CI=true``).
"""

from __future__ import annotations

import base64
import re
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from django_otp.oath import TOTP

from tests.browser.test_api_docs import browser, offline, server  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser

PASSWORD = "a-long-passphrase-7"
SCREENSHOTS = Path(tempfile.gettempdir())


def totp_code(secret: str) -> str:
    """What the authenticator app would show for the key printed on the setup page."""
    key = secret.replace(" ", "")
    key_bytes = base64.b32decode(key + "=" * (-len(key) % 8))
    generator = TOTP(key_bytes)
    generator.time = time.time()
    return f"{generator.token():06d}"


def sign_up(page, base: str, *, organization: str, email: str) -> None:
    page.goto(f"{base}/account/signup/")
    page.get_by_label("Organization name").fill(organization)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password (again)").fill(PASSWORD)
    page.get_by_role("button", name="Create organization").click()
    page.wait_for_load_state()


def test_sign_up_enable_2fa_create_an_agent_key_and_use_it(server, offline):  # noqa: F811
    from playwright.sync_api import expect

    base, page = server["base"], offline.page
    sign_up(page, base, organization="Browser Co", email="owner@browser.test")
    assert "/account/" not in page.url, page.content()[:2000]

    page.goto(f"{base}/account/2fa/setup/")
    expect(page.locator(".qr svg")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "awaithuman-2fa-setup.png"), full_page=True)
    secret = page.get_by_test_id("totp-secret").inner_text()
    page.get_by_role("textbox", name="Code").fill(totp_code(secret))
    page.get_by_role("button", name="Turn on").click()
    codes = page.get_by_test_id("recovery-codes").locator("li")
    expect(codes).to_have_count(10)

    page.goto(f"{base}/org/agents/")
    page.get_by_label("Name").fill("refund-bot")
    page.get_by_role("button", name="Create agent").click()
    expect(page.get_by_role("heading", name="refund-bot")).to_be_visible()
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_test_id("new-api-key").inner_text().strip()
    assert re.fullmatch(r"ahk_live_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}", key)

    response = httpx.post(
        f"{base}/api/v1/escalations",
        headers={"Authorization": f"Bearer {key}"},
        json={"kind": "approval", "title": "Refund $750 to order #1042"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "pending"

    page.goto(f"{base}/org/overview/")
    expect(page.get_by_test_id("pending")).to_have_text("1")
    page.goto(f"{base}/org/agents/")
    page.get_by_role("link", name="refund-bot").click()
    expect(page.locator("table")).not_to_contain_text("never")  # the key shows its last use
    assert offline.escaped == []
    assert offline.errors == []


def test_an_invited_operator_signs_up_from_the_link_and_lands_in_the_organization(
    server,  # noqa: F811
    offline,  # noqa: F811
    browser,  # noqa: F811
):
    from playwright.sync_api import expect

    base, page = server["base"], offline.page
    sign_up(page, base, organization="Invite Co", email="owner@invite.test")
    page.goto(f"{base}/org/members/")
    page.get_by_label("E-mail").fill("olga@invite.test")
    page.get_by_label("Role").select_option("operator")
    page.get_by_role("button", name="Send invitation").click()
    link = page.get_by_test_id("invite-link").inner_text().strip()
    page.screenshot(path=str(SCREENSHOTS / "awaithuman-members.png"), full_page=True)
    assert link.startswith(f"{base}/invitations/")

    invitee = browser.new_context()
    try:
        olga = invitee.new_page()
        olga.goto(link)
        expect(olga.get_by_role("heading", name="Join Invite Co")).to_be_visible()
        olga.get_by_role("link", name="Create your account").click()
        expect(olga.get_by_label("Email")).to_have_value("olga@invite.test")
        olga.get_by_label("Password", exact=True).fill(PASSWORD)
        olga.get_by_label("Password (again)").fill(PASSWORD)
        olga.get_by_role("button", name="Create account and join").click()
        olga.wait_for_load_state()
        header = olga.locator("header.topbar")
        expect(header).to_contain_text("Invite Co")
        expect(header).to_contain_text("Operator")
        olga.goto(f"{base}/org/members/")
        expect(olga.locator("main")).to_contain_text("owner@invite.test")
        # The same link cannot be used again.
        again = olga.goto(link)
        assert again is not None and again.status == 410
    finally:
        invitee.close()

    page.reload()
    expect(page.locator("main")).to_contain_text("olga@invite.test")
