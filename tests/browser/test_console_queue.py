"""The live queue and the decision screen in a real browser, against a real daphne.

Two operators sign in (two browser contexts). An agent creates an escalation through the API; it
appears in both queues without a reload; one operator claims it and the other sees the claim
live; the first answers a typed form (a browser-side and a server-side validation error first),
and the agent's parked ``/wait`` returns that decision. Hostile agent text stays inert.

Reuses the Chromium fixture of ``test_api_docs`` (headless Debian Chromium; a missing browser
skips locally and fails with ``CI=true``). Screenshots go to ``docs/screenshots/``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.browser.test_api_docs import browser  # noqa: F401  (fixture)
from tests.live import ROOT, embedded_stack

pytestmark = pytest.mark.browser

PASSWORD = "queue-passphrase-42"
SCREENSHOTS = ROOT / "docs" / "screenshots"

SETUP = """
import json
from tenants.models import Organization
from audit.services import SYSTEM_ACTOR
from tenants.services import membership_add, user_get_or_create
organization = Organization.objects.get(slug=SLUG)
user = user_get_or_create(email="dana@queue.test", password=PASSWORD)
membership_add(organization=organization, user=user, role="operator", actor=SYSTEM_ACTOR)
"""

SHIPPING = {
    "kind": "question",
    "title": "Which carrier for the replacement laptop?",
    "priority": "high",
    "context": {
        "reasoning": "The customer needs the laptop by Friday; ground may be too slow.",
        "messages": [
            {"role": "user", "content": "My laptop arrived broken. I need a new one by Friday."},
            {"role": "assistant", "content": "I'm sorry! I can ship a replacement today."},
        ],
    },
    "response_schema": {
        "type": "object",
        "properties": {
            "carrier": {"enum": ["ground", "express", "overnight"], "title": "Carrier"},
            "days": {
                "type": "integer",
                "title": "Delivery days",
                "minimum": 1,
                "exclusiveMaximum": 6,
                "description": "Business days; fewer than 6.",
            },
        },
        "required": ["carrier", "days"],
    },
}


@pytest.fixture(scope="module")
def queue_server(
    browser: Any,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    with embedded_stack(tmp_path_factory.mktemp("queue")) as stack:
        slug = stack.manage(
            "createorg", "Queue Co", "--owner", "olivia@queue.test", "--password", PASSWORD
        )
        setup = f"SLUG = {json.dumps(slug)}\nPASSWORD = {json.dumps(PASSWORD)}\n{SETUP}"
        stack.manage("shell", "-c", setup)
        key = stack.manage("createapikey", "--org", slug, "--agent", "support-bot")
        yield {"base": stack.daphne(), "agent_key": key}


class Operator:
    """One person in their own browser context, recording dialogs and script errors."""

    def __init__(self, browser: Any, base: str, email: str) -> None:  # noqa: F811
        self.context = browser.new_context(viewport={"width": 1280, "height": 860})
        self.page = self.context.new_page()
        self.base = base
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on(
            "dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss())
        )
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(f"{base}/account/login/")
        self.page.get_by_label("E-mail").fill(email)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(f"{base}/")

    def open_queue(self) -> None:
        from playwright.sync_api import expect

        self.page.goto(f"{self.base}/")
        expect(self.page.locator("#live-status")).to_have_attribute("data-state", "live")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def operators(browser: Any, queue_server: dict[str, str]) -> Iterator[list[Operator]]:  # noqa: F811
    people = [
        Operator(browser, queue_server["base"], "olivia@queue.test"),
        Operator(browser, queue_server["base"], "dana@queue.test"),
    ]
    yield people
    for person in people:
        person.close()


def create(server: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{server['base']}/api/v1/escalations",
        json=body,
        headers={"Authorization": f"Bearer {server['agent_key']}"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_two_operators_work_a_live_queue_and_the_agent_gets_the_typed_answer(
    queue_server, operators
):
    from playwright.sync_api import expect

    olivia, dana = operators
    olivia.open_queue()
    dana.open_queue()

    created = create(queue_server, SHIPPING)
    row = f'tr.qrow[data-id="{created["id"]}"]'
    # Appears in both queues without a reload.
    expect(olivia.page.locator(row)).to_be_visible(timeout=5000)
    expect(dana.page.locator(row)).to_be_visible(timeout=5000)

    answer: dict[str, Any] = {}

    def wait() -> None:
        response = httpx.get(
            f"{queue_server['base']}/api/v1/escalations/{created['id']}/wait?timeout=60",
            headers={"Authorization": f"Bearer {queue_server['agent_key']}"},
            timeout=70,
        )
        answer.update(status=response.status_code, body=response.json())

    waiter = threading.Thread(target=wait)
    waiter.start()

    # j selects the first row (the only high-priority one is first), Enter opens it.
    olivia.page.keyboard.press("j")
    expect(olivia.page.locator(row)).to_have_attribute("aria-selected", "true")
    olivia.page.keyboard.press("Enter")
    olivia.page.wait_for_url(f"**/escalations/{created['id']}/")
    olivia.page.keyboard.press("c")  # claim
    expect(olivia.page.locator("#claim-state")).to_contain_text("olivia@queue.test (you)")

    # Dana, still on the queue, sees the claim arrive live.
    expect(dana.page.locator(f"{row} .q-claim")).to_have_text("olivia@queue.test", timeout=5000)

    page = olivia.page
    # A browser-side check first: the required carrier is empty, so nothing is sent.
    page.get_by_label("Delivery days").fill("3")
    page.keyboard.press("Escape")
    page.get_by_role("button", name="Send answer").click()
    assert page.locator("#f-response-carrier").evaluate("el => !el.checkValidity()")
    assert "/respond" not in page.url

    # A server-side check next: exclusiveMaximum has no HTML constraint; the service's error is
    # shown next to its input, with what was typed kept.
    page.get_by_label("Carrier").select_option(label="express")
    page.get_by_label("Delivery days").fill("6")
    page.get_by_role("button", name="Send answer").click()
    expect(page.locator("#f-response-days-errors")).to_contain_text("6")
    expect(page.get_by_label("Delivery days")).to_have_value("6")
    assert not answer, "nothing was decided yet"

    page.get_by_label("Delivery days").fill("2")
    page.get_by_role("button", name="Send answer").click()
    page.wait_for_url(f"{queue_server['base']}/")

    waiter.join(timeout=15)
    assert answer["status"] == 200
    assert answer["body"]["status"] == "answered"
    assert answer["body"]["decision"]["response"] == {"carrier": "express", "days": 2}

    # And it leaves Dana's queue without a reload.
    expect(dana.page.locator(row)).to_have_count(0, timeout=5000)
    assert olivia.errors == [] and dana.errors == []
    assert olivia.dialogs == [] and dana.dialogs == []


REFUND = {
    "kind": "approval",
    "title": "Refund $750 to order #1042",
    "priority": "high",
    "action": {
        "name": "issue_refund",
        "arguments": {"order": 1042, "amount": 750, "currency": "USD", "reason": "duplicate"},
    },
    "context": {
        "reasoning": (
            "The customer was charged twice for order #1042 (two captures 14 seconds apart).\n"
            "Refunds over $500 need a human, so I am asking before issuing it."
        ),
        "tool_calls": [
            {"name": "lookup_order", "arguments": {"order": 1042}, "result": {"total": 750}},
            {
                "name": "list_charges",
                "arguments": {"order": 1042},
                "result": [{"id": "ch_1", "amount": 750}, {"id": "ch_2", "amount": 750}],
            },
            {"name": "check_refund_policy", "arguments": {"amount": 750}, "error": "timeout"},
        ],
        "messages": [
            {"role": "user", "content": "I was charged twice for my order!"},
            {"role": "assistant", "content": "I see two charges of $750. Let me fix that."},
        ],
    },
    "metadata": {"ticket": "SUP-4411"},
}

HOSTILE = "<script>alert('title')</script><img src=x onerror=alert('img')>"


def test_hostile_agent_text_renders_inertly_and_screenshots(queue_server, operators):
    from playwright.sync_api import expect

    olivia, _ = operators
    olivia.open_queue()
    calls = [
        {
            "name": f"search_orders_{index}",
            "arguments": {"query": f"customer {index} <b>bold</b>", "limit": 20},
            "result": ("row " * 400) if index % 10 == 0 else {"matches": index},
            "error": "<script>alert('error')</script>" if index % 50 == 7 else None,
        }
        for index in range(200)
    ]
    hostile = create(
        queue_server,
        {
            "kind": "approval",
            "title": HOSTILE,
            "priority": "urgent",
            "action": {
                "name": "send_email<script>alert(1)</script>",
                "arguments": {
                    "to": "ceo@example.com",
                    "link": "javascript:alert('link')",
                    "body": "<a href=\"javascript:alert('a')\">click</a>",
                },
            },
            "context": {
                "reasoning": "</pre><script>alert('reasoning')</script>",
                "tool_calls": calls,
                "messages": [
                    {"role": "user\"><script>alert('role')</script>", "content": HOSTILE},
                    {"role": "assistant", "content": [{"type": "text", "text": HOSTILE}]},
                ],
            },
            "metadata": {"<i>key</i>": "javascript:alert('meta')"},
        },
    )
    refund = create(queue_server, REFUND)
    for title, priority in [
        ("Delete customer 7 and their data", "normal"),
        ("Send the quarterly report to the board", "low"),
    ]:
        create(
            queue_server,
            {
                "kind": "approval",
                "title": title,
                "priority": priority,
                "action": {"name": "do", "arguments": {"id": 7}},
            },
        )

    page = olivia.page
    row = page.locator(f'tr.qrow[data-id="{hostile["id"]}"]')
    expect(row).to_be_visible(timeout=5000)
    expect(row.locator(".q-title a")).to_have_text(HOSTILE)  # shown as text, arrived live
    expect(page.locator("tr.qrow")).to_have_count(4, timeout=5000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.wait_for_timeout(2200)  # let the new-row highlight fade
    page.screenshot(path=str(SCREENSHOTS / "queue.png"))

    page.goto(f"{queue_server['base']}/escalations/{hostile['id']}/")
    expect(page.locator("h1")).to_have_text(HOSTILE)
    expect(page.locator("ol.calls > li")).to_have_count(200)
    assert page.locator("ol.calls details.fold").count() >= 20  # long results folded
    # No script element came from agent text: every one is our own, served from /static/.
    scripts = page.evaluate("[...document.scripts].map(s => s.src)")
    base = queue_server["base"]
    assert sorted(scripts) == [
        f"{base}/static/console/decision.js",
        f"{base}/static/console/forms.js",
        f"{base}/static/console/menu.js",
        f"{base}/static/console/pwa.js",
    ], scripts
    assert page.locator('a[href^="javascript:"]').count() == 0
    assert page.locator("img").count() == 0
    assert olivia.dialogs == []
    assert olivia.errors == []

    # Still usable: help opens with "?", and a rejection with a reason goes through.
    page.keyboard.press("?")
    expect(page.locator("dialog#help")).to_be_visible()
    page.keyboard.press("Escape")
    page.get_by_label("Comment").fill("Never e-mail the CEO from a support bot.")
    page.get_by_role("button", name="Reject").click()
    page.wait_for_url(f"{queue_server['base']}/")
    decided = httpx.get(
        f"{queue_server['base']}/api/v1/escalations/{hostile['id']}",
        headers={"Authorization": f"Bearer {queue_server['agent_key']}"},
        timeout=10,
    ).json()
    assert decided["status"] == "rejected"
    assert olivia.dialogs == []

    page.goto(f"{queue_server['base']}/escalations/{refund['id']}/")
    page.screenshot(path=str(SCREENSHOTS / "decision.png"))
