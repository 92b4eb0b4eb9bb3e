"""The fake providers of the notification fan-out bench: Twilio, Telegram and Slack fakes
(``tests/notifications/fakes.py``) served from a child process of their own, each accepted request
recorded with the time its headers arrived, and the settings that point our transports at them."""

from __future__ import annotations

import json
import multiprocessing as mp
import re
from typing import Any

from .queue_fanout import setup_django

# One operator per provider: (channel, address the fake knows).
OPERATORS = (
    ("sms", "+15555550101"),
    ("telegram", "700000001"),
    ("slack", "U0FANOUT01"),
)
CHANNELS = tuple(channel for channel, _ in OPERATORS)
# Escalation titles end in "<kind>-<number>": burst-00042, baseburst-00042, loop-00042, …
TITLE = re.compile(r"\b([a-z]+)-(\d{5})\b")


def fake_providers(env: dict[str, str], urls: Any, stop: Any, out: Any, count: Any) -> None:
    """Serve the three fakes until ``stop``; then put every accepted request on ``out`` as
    (channel, received_at, title kind, title number)."""
    setup_django(env)  # fakes.py imports the models
    from tests.notifications.fakes import FakeSlack, FakeTelegram, FakeTwilio

    receipts: list[tuple[str, float, bytes]] = []

    def recording(base: type, channel: str) -> Any:
        class Recording(base):  # type: ignore[valid-type, misc]
            def handle(self, request: Any) -> Any:
                status, headers, body = super().handle(request)
                # Slack answers failures with 200 and {"ok": false}.
                if status < 300 and json.loads(body or b"{}").get("ok", True):
                    receipts.append((channel, request.received_at, request.body))
                    with count.get_lock():
                        count.value += 1
                return status, headers, body

        return Recording()

    twilio, telegram, slack = (
        recording(FakeTwilio, "sms"),
        recording(FakeTelegram, "telegram"),
        recording(FakeSlack, "slack"),
    )
    telegram.chats.add(dict(OPERATORS)["telegram"])
    slack.users.add(dict(OPERATORS)["slack"])
    with twilio, telegram, slack:
        urls.put({"sms": twilio.url, "telegram": telegram.url, "slack": slack.url})
        stop.wait()
    found = []
    for channel, received_at, body in receipts:
        match = TITLE.search(body.decode(errors="replace"))
        found.append((channel, received_at, *(match.groups() if match else ("?", "0"))))
    out.put(found)


class FakeProviders:
    def __init__(self, env: dict[str, str]) -> None:
        ctx = mp.get_context("spawn")
        self.stop, self.out = ctx.Event(), ctx.Queue()
        self.count = ctx.Value("i", 0)
        urls = ctx.Queue()
        self.process = ctx.Process(
            target=fake_providers, args=(env, urls, self.stop, self.out, self.count), daemon=True
        )
        self.process.start()
        self.urls: dict[str, str] = urls.get(timeout=60)

    def finish(self) -> list[tuple[str, float, str, int]]:
        self.stop.set()
        found = self.out.get(timeout=120)
        self.process.join(timeout=30)
        return [(channel, at, kind, int(number)) for channel, at, kind, number in found]


def provider_settings(urls: dict[str, str]) -> dict[str, str]:
    """The environment that points our transports at the fakes, with the credentials they check."""
    from tests.notifications.fakes import FakeSlack, FakeTelegram, FakeTwilio

    return {
        "TWILIO_API_BASE": urls["sms"],
        "TWILIO_ACCOUNT_SID": FakeTwilio.account_sid,
        "TWILIO_AUTH_TOKEN": FakeTwilio.auth_token,
        "TWILIO_FROM_NUMBER": FakeTwilio.from_number,
        "TELEGRAM_API_BASE": urls["telegram"],
        "TELEGRAM_BOT_TOKEN": FakeTelegram.bot_token,
        "TELEGRAM_BOT_USERNAME": "AwaitHumanBenchBot",
        "SLACK_API_BASE": urls["slack"],
        "SLACK_BOT_TOKEN": FakeSlack.bot_token,
    }
