"""The API docs in a real browser, against a real daphne: Swagger UI renders from our own assets.

Headless Debian Chromium driven by Playwright (never a Playwright-downloaded browser). Locally a
missing Chromium skips these tests; with ``CI=true`` it fails them, so CI cannot pass silently.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.live import ROOT, embedded_stack

pytestmark = pytest.mark.browser

CHROMIUM = Path(os.environ.get("AWAITHUMAN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = Path(tempfile.gettempdir()) / "awaithuman-api-docs.png"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI runs the browser tests, so a missing browser is a failure")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A daphne on a fresh SQLite database, seeded with the demo organization (started after
    the browser, so a missing browser skips or fails before any server is spent on it)."""
    credentials = ROOT / ".demo-credentials.json"
    # seed_demo rewrites the developer's .demo-credentials.json; put theirs back afterwards.
    saved = credentials.read_bytes() if credentials.exists() else None
    with embedded_stack(tmp_path_factory.mktemp("browser")) as stack:
        try:
            demo = json.loads(stack.manage("seed_demo", "--json"))
        finally:
            if saved is None:
                credentials.unlink(missing_ok=True)
            else:
                credentials.write_bytes(saved)
        yield {"base": stack.daphne(), "agent_key": demo["agent_key"]}


class OfflinePage:
    """A page that aborts, and records, every request that would leave 127.0.0.1."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.escaped: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on(
            "response",
            lambda response: (
                self.failed.append(f"{response.status} {response.url}")
                if response.status >= 400
                else None
            ),
        )

    def _route(self, route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.escaped.append(route.request.url)
            route.abort()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def offline(browser: Any) -> Iterator[OfflinePage]:
    page = OfflinePage(browser)
    yield page
    page.close()


def test_swagger_ui_renders_offline_from_our_own_assets(server, offline):
    from playwright.sync_api import expect

    page = offline.page
    page.goto(f"{server['base']}/api/docs/", wait_until="networkidle")

    expect(page.locator(".swagger-ui .info .title")).to_contain_text("AwaitHuman API")
    path = page.locator('.opblock-summary-path[data-path="/api/v1/escalations"]')
    create = page.locator(".opblock.opblock-post", has=path)
    expect(create).to_have_count(1)
    expect(create.locator(".opblock-summary-method")).to_have_text("POST")
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    assert offline.escaped == [], "the docs page reached beyond 127.0.0.1"
    assert offline.failed == []
    assert offline.errors == []


def test_the_docs_origin_can_call_the_api_with_the_demo_key(server, offline):
    """What Swagger's "Try it out" does: a same-origin fetch with the agent's bearer key."""
    page = offline.page
    page.goto(f"{server['base']}/api/docs/")
    result = page.evaluate(
        """async (key) => {
            const response = await fetch("/api/v1/escalations", {
                method: "POST",
                headers: {"Authorization": `Bearer ${key}`, "Content-Type": "application/json"},
                body: JSON.stringify({kind: "approval", title: "Refund $750 to order #1042"}),
            });
            return {status: response.status, body: await response.json()};
        }""",
        server["agent_key"],
    )
    assert result["status"] == 201, result
    assert result["body"]["status"] == "pending"
    assert offline.escaped == []


def test_readyz_answers_ok_in_the_browser(server, offline):
    page = offline.page
    response = page.goto(f"{server['base']}/readyz")
    assert response is not None
    assert response.status == 200
    body = json.loads(page.inner_text("body"))
    assert body["status"] == "ok"
    assert body["checks"]["database"] is True
    assert offline.escaped == []
