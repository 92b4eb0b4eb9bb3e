"""Notification test helpers: a real SMTP server on 127.0.0.1, a scriptable fake provider, and
shortcuts for contact points and escalations whose after-commit hooks run."""

from __future__ import annotations

import email
import email.policy
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from django.utils import timezone

from awaithuman.celery import app as celery_app
from notifications.contact_points import preference_get
from notifications.models import ContactPoint, Delivery
from notifications.transports import TRANSPORTS, Transport, TransportError
from tests.conftest import Tenant, create_escalation
from tests.live import free_port


@pytest.fixture(autouse=True)
def _eager_tasks() -> Iterator[None]:
    """In-process tests run the send tasks inline, on PostgreSQL+Redis too (the live tests run
    a real worker instead)."""
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager


# --- A real SMTP server --------------------------------------------------------------------


class Inbox:
    """What the SMTP server accepted, parsed; ``stall_first_data`` makes the first DATA hang
    (until ``release`` is set) to let a test kill the sender mid-message, ``stall_after`` the
    first DATA once that many messages were accepted."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()
        self.stall_first_data = False
        self.stall_after: int | None = None
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.refuse: set[str] = set()
        self.refuse_senders = False

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.refuse_senders:
            return "553 5.7.1 Sender address rejected: not owned by user"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse:
            return "550 5.1.1 No such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        stall = self.stall_first_data or (
            self.stall_after is not None and len(self.messages) >= self.stall_after
        )
        if stall and not self.stalled.is_set():
            self.stalled.set()
            import asyncio

            while not self.release.is_set():
                await asyncio.sleep(0.05)
            return "451 try again later"
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if address in str(m["To"])]


@dataclass
class SmtpServer:
    host: str
    port: int
    inbox: Inbox


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield SmtpServer("127.0.0.1", port, inbox)
    finally:
        inbox.release.set()
        controller.stop()


@pytest.fixture
def smtp(settings: Any, smtp_server: SmtpServer) -> SmtpServer:
    """Django's SMTP backend pointed at the local server."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = smtp_server.host
    settings.EMAIL_PORT = smtp_server.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    return smtp_server


def text_and_html(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    return (
        text.get_content() if text is not None else "",
        html.get_content() if html is not None else "",
    )


# --- A fake provider, scripted per test ------------------------------------------------------


@dataclass
class FakeProvider:
    """Stands in for an external provider (behind the ``sms`` channel): records every send and
    fails as scripted — each entry of ``failures`` is used for one send, then sends succeed."""

    sent: list[str] = field(default_factory=list)
    failures: list[TransportError] = field(default_factory=list)
    on_send: Callable[[Delivery], None] | None = None

    def transport(self) -> type[Transport]:
        provider = self

        class FakeTransport(Transport):
            channel = "sms"

            def send(self, delivery: Delivery) -> str:
                if provider.on_send is not None:
                    provider.on_send(delivery)
                if provider.failures:
                    raise provider.failures.pop(0)
                provider.sent.append(delivery.contact_point.address)
                return f"fake-{len(provider.sent)}"

            def send_test(self, contact_point: ContactPoint) -> str:
                provider.sent.append(f"test:{contact_point.address}")
                return "fake-test"

            def send_verification(self, contact_point: ContactPoint, code: str) -> None:
                provider.sent.append(f"code:{contact_point.address}:{code}")

        return FakeTransport


@pytest.fixture
def fake_sms(monkeypatch: pytest.MonkeyPatch) -> FakeProvider:
    provider = FakeProvider()
    monkeypatch.setitem(TRANSPORTS, "sms", provider.transport())
    return provider


# --- Shortcuts ---------------------------------------------------------------------------------


def add_point(
    membership: Any,
    channel: str,
    address: str,
    *,
    position: int,
    priorities: list[str] | None = None,
    verified: bool = True,
) -> ContactPoint:
    """A contact point set up directly (the console's flow is tested in test_contact_points)."""
    preference_get(membership)  # seeds the account e-mail first, as in real use
    return ContactPoint.objects.create(
        membership=membership,
        channel=channel,
        address=address,
        position=position,
        priorities=priorities or [],
        verified_at=timezone.now() if verified else None,
    )


def new_escalation(capture: Any, tenant: Tenant, **overrides: Any) -> dict[str, Any]:
    """Create an escalation through the API and run its after-commit hooks (fan-out, sends)."""
    with capture(execute=True):
        return create_escalation(tenant, **overrides)


def deliveries(escalation_id: str) -> list[Delivery]:
    return list(
        Delivery.objects.filter(escalation__public_id=escalation_id)
        .select_related("membership__user", "contact_point")
        .order_by("pk")
    )
