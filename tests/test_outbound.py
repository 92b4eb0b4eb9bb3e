"""The outbound guard: with it on (production), no address form of our own network is reached —
a listener on 127.0.0.1 counts zero connections; with it off (the embedded default), local
receivers work."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from awaithuman import outbound
from tests.conftest import create_escalation
from tests.notifications.fake_receiver import Receiver, running_receiver
from webhooks import sending
from webhooks.models import WebhookMessage

BODY = b'{"type":"escalation.decided","data":{}}'


@pytest.fixture
def listener() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


@pytest.fixture
def guard_on(settings: Any) -> None:
    settings.OUTBOUND_ALLOW_PRIVATE = False


def post(url: str) -> sending.AttemptResult:
    return sending.post(url, BODY, {"content-type": "application/json"})


def assert_untouched(listener: Receiver) -> None:
    time.sleep(0.05)  # a connection, had one been made, would be accepted by now
    assert listener.connections == 0
    assert listener.requests == []


LOOPBACK_FORMS = {
    "hostname resolving to 127.0.0.1": "http://localhost:{port}/",
    "dotted quad": "http://127.0.0.1:{port}/",
    "decimal": "http://2130706433:{port}/",
    "hex": "http://0x7f000001:{port}/",
    "dotted hex": "http://0x7f.0x0.0x0.0x1:{port}/",
    "octal": "http://0177.0.0.1:{port}/",
    "long octal": "http://017700000001:{port}/",
    "shortened": "http://127.1:{port}/",
    "IPv4-mapped IPv6": "http://[::ffff:127.0.0.1]:{port}/",
    "IPv4-mapped IPv6 in hex": "http://[::ffff:7f00:1]:{port}/",
    "IPv6 loopback": "http://[::1]:{port}/",
    "unspecified": "http://0.0.0.0:{port}/",
    "https": "https://127.0.0.1:{port}/",
}


@pytest.mark.parametrize("form", LOOPBACK_FORMS)
def test_every_loopback_form_is_refused_without_a_connection(guard_on, listener, form):
    result = post(LOOPBACK_FORMS[form].format(port=listener.port))
    assert result.permanent
    # httpx itself refuses some forms as invalid URLs before our guard sees them.
    assert result.error.startswith(("Refused by the outbound guard: ", "Invalid URL: "))
    assert result.status_code is None
    assert_untouched(listener)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.1.2.3", "a private address"),
        ("172.16.0.1", "a private address"),
        ("192.168.1.1", "a private address"),
        ("127.0.0.53", "a loopback address"),
        ("169.254.169.254", "a link-local address"),
        ("100.64.0.1", "a carrier-grade NAT address (100.64.0.0/10)"),
        ("100.127.255.254", "a carrier-grade NAT address (100.64.0.0/10)"),
        ("224.0.0.251", "a multicast address"),
        ("0.0.0.0", "an unspecified address"),  # noqa: S104 (an address under test)
        ("240.0.0.1", "a reserved address"),
        ("255.255.255.255", "a reserved address"),
        ("::", "an unspecified address"),
        ("::1", "a loopback address"),
        ("fe80::1", "a link-local address"),
        ("fd12:3456::1", "a unique-local address"),
        ("ff02::1", "a multicast address"),
        ("::ffff:10.0.0.1", "an IPv4-mapped IPv6 address"),
        ("::ffff:8.8.8.8", "an IPv4-mapped IPv6 address"),
        ("64:ff9b::a9fe:a9fe", "an IPv6 address embedding 169.254.169.254, a link-local address"),
        ("2002:0a00:0001::", "an IPv6 address embedding 10.0.0.1, a private address"),
    ],
)
def test_non_public_addresses_are_refused(address, kind):
    assert outbound.address_refusal(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert outbound.address_refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("host", ["example.com", "8.8.8.8", "hooks.example.co.uk", "a1.example"])
def test_ordinary_hosts_are_not_mistaken_for_encoded_addresses(host):
    assert outbound.host_refusal(host) is None


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Resolve the given names to the given addresses (and count lookups)."""
    lookups: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if host not in answers:
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
            for address in answers[host]
        ]

    monkeypatch.setattr(outbound.socket, "getaddrinfo", getaddrinfo)
    return lookups


def test_a_name_with_one_private_address_among_public_ones_is_refused(
    guard_on, listener, monkeypatch
):
    fake_dns(monkeypatch, {"hooks.example.test": ["93.184.216.34", "127.0.0.1"]})
    result = post(f"http://hooks.example.test:{listener.port}/")
    assert result.error == (
        "Refused by the outbound guard: hooks.example.test resolves to 127.0.0.1, "
        "a loopback address"
    )
    assert_untouched(listener)


def test_the_name_is_resolved_once_and_the_validated_address_is_connected_to(
    settings, listener, monkeypatch
):
    """Resolve-then-connect: the socket goes to the address that was checked (no second lookup
    a rebinding DNS server could answer differently), while the Host header keeps the name."""
    settings.OUTBOUND_ALLOW_PRIVATE = True  # so the check passes for our 127.0.0.1 listener
    lookups = fake_dns(monkeypatch, {"hooks.example.test": ["127.0.0.1"]})
    result = post(f"http://hooks.example.test:{listener.port}/hook")
    assert result.status_code == 200
    assert lookups == ["hooks.example.test"]
    [request] = listener.requests
    assert request.headers["host"] == f"hooks.example.test:{listener.port}"


def test_with_the_guard_off_localhost_is_reached(settings, listener):
    settings.OUTBOUND_ALLOW_PRIVATE = True
    result = post(f"http://localhost:{listener.port}/hook")
    assert (result.status_code, result.error) == (200, "")
    assert listener.connections == 1


def test_a_refused_callback_fails_at_once_and_is_not_retried(
    guard_on, acme, listener, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        escalation_id = create_escalation(
            acme, callback_url=f"http://localhost:{listener.port}/hook"
        )["id"]
    with django_capture_on_commit_callbacks(execute=True):
        response = acme.client_for("bob").post(
            f"/api/v1/escalations/{escalation_id}/responses", {"outcome": "approve"}, format="json"
        )
    assert response.status_code == 201  # the decision stands; only the callback failed
    message = WebhookMessage.objects.get(escalation__public_id=escalation_id)
    assert message.status == WebhookMessage.Status.FAILED
    assert "loopback" in message.attempts.get().error
    assert_untouched(listener)


def test_by_default_the_guard_is_off_only_in_the_embedded_default():
    script = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', "
        "'awaithuman.settings'); django.setup(); from django.conf import settings; "
        "print(settings.EMBEDDED, settings.OUTBOUND_ALLOW_PRIVATE)"
    )
    env = {k: v for k, v in os.environ.items() if k != "OUTBOUND_ALLOW_PRIVATE"}
    for redis, expected in (("", "True True"), ("redis://127.0.0.1:1/0", "False False")):
        out = subprocess.run(
            [sys.executable, "-c", script],
            env={**env, "REDIS_URL": redis},
            capture_output=True,
            text=True,
            check=True,
        )
        assert out.stdout.split("\n")[-2] == expected
