"""The console at a phone's width (390 × 844) and a laptop's (1366 × 768), in a real browser
against a real daphne: an operator sees an escalation arrive live, reads the action and the
reasoning before the buttons, and approves; Sign out is reachable; no page scrolls sideways;
an owner's navigation fits one line on the laptop. Saves a phone screenshot for the README.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.test_api_docs import browser  # noqa: F401  (fixture)
from tests.browser.test_console_queue import REFUND, SCREENSHOTS
from tests.live import embedded_stack

pytestmark = pytest.mark.browser

PASSWORD = "layout-passphrase-42"
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1366, "height": 768}
SIZES = {"phone": PHONE, "laptop": LAPTOP}

SETUP = """
from tenants.models import Organization
from audit.services import SYSTEM_ACTOR
from tenants.services import membership_add, user_get_or_create
from notifications.models import ContactPoint
organization = Organization.objects.get(slug=SLUG)
user = user_get_or_create(email="omar.operator.with.a.long.address@layout.test", password=PASSWORD)
omar = membership_add(organization=organization, user=user, role="operator", actor=SYSTEM_ACTOR)
ContactPoint.objects.create(membership=omar, channel="email", address=user.email)
ContactPoint.objects.create(membership=omar, channel="sms", address="+15551230001")
"""
OPERATOR = "omar.operator.with.a.long.address@layout.test"
OWNER = "olga@layout.test"


@pytest.fixture(scope="module")
def layout_server(
    browser: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    with embedded_stack(tmp_path_factory.mktemp("layout")) as stack:
        slug = stack.manage(
            "createorg", "Layout Works Inc.", "--owner", OWNER, "--password", PASSWORD
        )
        stack.manage("shell", "-c", f"SLUG = {json.dumps(slug)}\nPASSWORD = {PASSWORD!r}\n{SETUP}")
        key = stack.manage("createapikey", "--org", slug, "--agent", "support-bot")
        yield {"base": stack.daphne(), "agent_key": key}


def sign_in(browser: Any, base: str, email: str, viewport: dict[str, int]) -> Any:  # noqa: F811
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda error: page.errors.append(str(error)))  # type: ignore[attr-defined]
    page.goto(f"{base}/account/login/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")
    return page


def sideways_scroll(page: Any) -> list[str]:
    """What sticks out past the window's right edge (nothing: no horizontal scroll)."""
    if page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"):
        return []
    return page.evaluate(
        """[...document.querySelectorAll("body *")]
          .filter(e => e.getBoundingClientRect().right > window.innerWidth + 0.5)
          .map(e => `${e.tagName}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)"""
    )


def top(page: Any, selector: str) -> float:
    return page.locator(selector).first.bounding_box()["y"]


@pytest.mark.parametrize("size", sorted(SIZES))
def test_an_operator_sees_it_arrive_reads_it_and_approves(browser, layout_server, size):  # noqa: F811
    from playwright.sync_api import expect

    base = layout_server["base"]
    page = sign_in(browser, base, OPERATOR, SIZES[size])
    expect(page.locator("#live-status")).to_have_attribute("data-state", "live")

    created = httpx.post(
        f"{base}/api/v1/escalations",
        json={**REFUND, "external_id": f"layout-{size}"},
        headers={"Authorization": f"Bearer {layout_server['agent_key']}"},
        timeout=10,
    ).json()
    row = page.locator(f'tr.qrow[data-id="{created["id"]}"]')
    expect(row).to_be_visible(timeout=5000)  # arrived live
    for cell in (".q-waiting", ".q-left", ".q-level", ".q-approvals"):
        expect(row.locator(cell)).to_be_visible()  # nothing of the row is lost on a phone
    assert sideways_scroll(page) == []

    row.locator(".q-title a").click()
    page.wait_for_url(f"**/escalations/{created['id']}/")
    approve = page.get_by_role("button", name="Approve")
    expect(approve).to_be_visible()
    if size == "phone":
        # Read first, decide second: the action and the reasoning come before the buttons.
        assert top(page, "#h-action") < top(page, "#h-reasoning") < approve.bounding_box()["y"]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "phone-decision.png"))
    assert sideways_scroll(page) == []

    approve.click()
    page.wait_for_url(f"{base}/")
    decided = httpx.get(
        f"{base}/api/v1/escalations/{created['id']}",
        headers={"Authorization": f"Bearer {layout_server['agent_key']}"},
        timeout=10,
    ).json()
    assert decided["status"] == "approved"
    assert decided["decision"]["decided_by"]["email"] == OPERATOR
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()


@pytest.mark.parametrize("size", sorted(SIZES))
def test_sign_out_is_reachable(browser, layout_server, size):  # noqa: F811
    from playwright.sync_api import expect

    base = layout_server["base"]
    page = sign_in(browser, base, OPERATOR, SIZES[size])
    menu = page.get_by_role("button", name="Menu")
    if size == "phone":
        expect(menu).to_be_visible()
        expect(page.get_by_role("navigation", name="Console")).to_be_hidden()
        menu.click()
        expect(page.get_by_role("navigation", name="Console")).to_be_visible()
    else:
        expect(menu).to_be_hidden()
    page.locator("summary.user").click()
    sign_out = page.get_by_role("menuitem", name="Sign out")
    expect(sign_out).to_be_visible()
    sign_out.click()
    page.wait_for_url("**/account/login/**")
    assert page.context.cookies() == [] or all(
        cookie["name"] != "sessionid" for cookie in page.context.cookies()
    )
    page.context.close()


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("path", ["/", "/contact-points/", "/org/members/", "/org/settings/"])
def test_no_page_scrolls_sideways(browser, layout_server, size, path):  # noqa: F811
    page = sign_in(browser, layout_server["base"], OWNER, SIZES[size])
    page.goto(layout_server["base"] + path)
    assert sideways_scroll(page) == []
    assert page.errors == []  # type: ignore[attr-defined]
    page.context.close()


def test_contact_points_have_their_controls_in_view_on_a_phone(browser, layout_server):  # noqa: F811
    from playwright.sync_api import expect

    page = sign_in(browser, layout_server["base"], OPERATOR, PHONE)
    page.goto(layout_server["base"] + "/contact-points/")
    points = page.locator("li.point")
    expect(points).to_have_count(2)
    for index in range(2):
        point = points.nth(index)
        for name in ("Remove", "Move down"):
            box = point.get_by_role("button", name=name).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], name
    # A priority ticks and saves at once, without a Save button per row.
    first = points.nth(0)
    expect(first.get_by_role("button", name="Save")).to_be_hidden()
    first.get_by_label("Urgent").check()
    page.wait_for_load_state()
    expect(page.locator("li.point").nth(0).get_by_label("Urgent")).to_be_checked()
    page.context.close()


def test_an_owners_navigation_fits_one_line_on_a_laptop(browser, layout_server):  # noqa: F811
    page = sign_in(browser, layout_server["base"], OWNER, LAPTOP)
    tops = page.locator("nav.nav a").evaluate_all("links => links.map(a => a.offsetTop)")
    assert len(tops) >= 11
    assert len(set(tops)) == 1, tops
    assert page.locator(".topbar").bounding_box()["height"] < 70
    page.context.close()
