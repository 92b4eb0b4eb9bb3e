"""The History page in a real browser, against a real daphne: filter and search the
organization's past escalations from the form (the view lands in the URL), open one with the
keyboard, and download the filtered view as CSV. The screenshot goes to ``docs/screenshots/``.

Reuses the Chromium fixture of ``test_api_docs`` (a missing browser skips locally and fails with
``CI=true``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.test_api_docs import browser  # noqa: F401  (fixture)
from tests.live import ROOT, embedded_stack

pytestmark = pytest.mark.browser

PASSWORD = "history-passphrase-42"
SCREENSHOTS = ROOT / "docs" / "screenshots"
OWNER = "hana@history.test"


def _call(base: str, key: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    response = httpx.request(
        method,
        f"{base}/api/v1/{path}",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code in (200, 201), response.text
    return response.json()


@pytest.fixture(scope="module")
def history_server(
    browser: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Any]]:
    with embedded_stack(tmp_path_factory.mktemp("history")) as stack:
        slug = stack.manage("createorg", "History Co", "--owner", OWNER, "--password", PASSWORD)
        agent = stack.manage("createapikey", "--org", slug, "--agent", "support-bot")
        person = stack.manage("createapikey", "--org", slug, "--user", OWNER)
        base = stack.daphne()
        refund = _call(
            base,
            agent,
            "POST",
            "escalations",
            {
                "kind": "approval",
                "title": "Refund $750 to order #1042",
                "action": {"name": "issue_refund", "arguments": {"order": 1042, "amount": 750}},
                "context": {"reasoning": "The customer was charged twice."},
            },
        )
        _call(
            base,
            person,
            "POST",
            f"escalations/{refund['id']}/responses",
            {"outcome": "reject", "comment": "Refunds over $500 need a manager."},
        )
        branch = _call(
            base,
            agent,
            "POST",
            "escalations",
            {
                "kind": "approval",
                "title": "Delete branch feature/old",
                "action": {"name": "delete_branch", "arguments": {"branch": "feature/old"}},
                "context": {"reasoning": "Stale for months."},
            },
        )
        _call(base, agent, "POST", f"escalations/{branch['id']}/cancel")
        newsletter = _call(
            base,
            agent,
            "POST",
            "escalations",
            {
                "kind": "approval",
                "title": "Send the spring newsletter",
                "action": {"name": "send_email", "arguments": {"list": "customers"}},
                "context": {"reasoning": "Marketing approved the campaign."},
            },
        )
        yield {
            "base": base,
            "refund": refund["id"],
            "branch": branch["id"],
            "newsletter": newsletter["id"],
        }


def test_filter_search_open_and_download_the_history(
    browser,  # noqa: F811
    history_server,
    tmp_path,
):
    from playwright.sync_api import expect

    base = history_server["base"]
    context = browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{base}/account/login/")
    page.get_by_label("E-mail").fill(OWNER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")

    page.get_by_role("link", name="History").click()
    page.wait_for_url(f"{base}/history/")
    rows = page.locator("#history-rows tr.qrow")
    expect(rows).to_have_count(3)
    page.screenshot(path=str(SCREENSHOTS / "history.png"), full_page=True)

    # Search: the rejection's comment finds it; the view is in the URL, to share.
    page.get_by_label("Search").fill("manager")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/history/?*q=manager*")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-id", history_server["refund"])

    # A filter: the cancelled one only.
    page.get_by_label("Search").fill("")
    page.get_by_label("Status").select_option("cancelled")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/history/?*status=cancelled*")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Delete branch feature/old")

    # Download what the page shows, as CSV.
    with page.expect_download() as download_info:
        page.get_by_test_id("export-csv").click()
    download = download_info.value
    assert download.suggested_filename.endswith("-escalations.csv")
    target = tmp_path / "history.csv"
    download.save_as(target)
    (line,) = csv.DictReader(io.StringIO(target.read_text()))
    assert line["id"] == history_server["branch"]
    assert line["status"] == "cancelled"
    assert line["decided_by"] == "agent"
    assert line["action"] == "delete_branch"

    # Open a past escalation from the keyboard, as in the queue.
    page.goto(f"{base}/history/?q=refund")
    expect(rows).to_have_count(1)
    page.keyboard.press("j")
    expect(rows.first).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/escalations/{history_server['refund']}/")
    expect(page.locator("body")).to_contain_text("Refunds over $500 need a manager.")

    assert not errors, errors
    context.close()
