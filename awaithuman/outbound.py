"""The outbound guard: agent callbacks and webhooks never reach our own network.

A callback URL is the caller's input, so "POST this to http://169.254.169.254/…" or to a
database on the private network must not work. Checking the URL when it is saved is not enough:
DNS can answer differently at delivery time (DNS rebinding), and the check and the connection
could even see different answers. So the check happens **at connect time**, inside the HTTP
client's network layer:

1. ``GuardedBackend.connect_tcp`` (an ``httpcore`` network backend under our httpx transport)
   receives the URL's host, refuses hosts written as decimal, octal, hex or shortened IPv4
   literals (``2130706433``, ``0x7f.1``, ``017700000001``, ``127.1``: resolvers accept them,
   people reading a URL do not), and resolves the host **once** with ``getaddrinfo``.
2. Every returned address is checked; one refused address refuses the host (a name that
   resolves to a public and a private address could otherwise be steered to the private one).
3. The socket connects to a validated IP. The Host header and, for HTTPS, the TLS server name
   (SNI) and certificate check still use the URL's host, because ``httpcore`` takes them from
   the request, not from the socket: the receiver sees an ordinary request.

Redirects are never followed (a 3xx is a failed attempt), and the client ignores proxy
environment variables, so nothing routes around the check. ``OUTBOUND_ALLOW_PRIVATE`` (default:
on in the embedded default, off in production) turns the refusal off for local development.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable
from functools import cache
from typing import Any

import certifi
import httpcore
import httpx
from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

CGNAT = ipaddress.ip_network("100.64.0.0/10")
UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
# The last label of a host that some resolver would read as (part of) an IPv4 number.
_NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)


class OutboundRefused(Exception):
    """The URL may not be reached from here. Permanent: retrying will not change the answer
    for an address, and a name that resolves to a private address is refused as one."""


def host_refusal(host: str) -> str | None:
    """Why ``host`` (as written in the URL) is refused before any lookup, or None."""
    if ":" in host:  # an IPv6 literal; its address is checked like any resolved one
        return None
    labels = host.rstrip(".").split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            ipaddress.IPv4Address(host)  # only the canonical dotted quad parses
        except ValueError:
            return f"{host} is an IPv4 address in a non-canonical (decimal/octal/hex) form"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64 or address in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: IPAddress) -> str | None:
    """What kind of address ``address`` is, if it may not be connected to ("a loopback
    address"); None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        if address in UNIQUE_LOCAL:
            return "a unique-local address"
        embedded = _embedded_ipv4(address)
        if embedded is not None and not address.is_unspecified and not address.is_loopback:
            reason = address_refusal(embedded)
            if reason:
                return f"an IPv6 address embedding {embedded}, {reason}"
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in CGNAT, "a carrier-grade NAT address (100.64.0.0/10)"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a public address"),
    )
    for refused, reason in checks:
        if refused:
            return reason
    return None


def resolve(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The addresses to connect to for ``host``, each checked unless ``allow_private``."""
    if not allow_private:
        reason = host_refusal(host)
        if reason:
            raise OutboundRefused(reason)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise httpcore.ConnectError(f"{host} could not be resolved: {exc}") from exc
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        text = str(sockaddr[0]).split("%", 1)[0]  # drop an IPv6 zone id
        if not allow_private:
            reason = address_refusal(ipaddress.ip_address(text))
            if reason:
                found = f"{text} is" if text == host else f"{host} resolves to {text},"
                raise OutboundRefused(f"{found} {reason}")
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise httpcore.ConnectError(f"{host} has no address")
    return addresses


class GuardedBackend(httpcore.NetworkBackend):
    """``httpcore``'s synchronous backend, connecting only to validated addresses."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        error: Exception | None = None
        for address in resolve(host, port, allow_private=self.allow_private):
            try:
                return self._backend.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
            except httpcore.ConnectError as exc:  # try the name's next address
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise OutboundRefused("Unix sockets are never reached from outbound requests")

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


@cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context per process: making one loads the CA bundle (~15 ms), once per
    callback attempt otherwise. Contexts are safe to share between threads."""
    return ssl.create_default_context(cafile=certifi.where())


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool that connects through ``GuardedBackend``."""

    def __init__(self, *, allow_private: bool) -> None:
        super().__init__(verify=_ssl_context(), trust_env=False)
        # httpx offers no argument for the network backend; its pool is replaced as a whole.
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            network_backend=GuardedBackend(allow_private=allow_private),
            max_connections=4,
            max_keepalive_connections=0,
        )


def outbound_client(*, timeout: float) -> httpx.Client:
    """An httpx client for URLs someone else gave us: guarded, no redirects, no proxies."""
    return httpx.Client(
        transport=GuardedTransport(allow_private=settings.OUTBOUND_ALLOW_PRIVATE),
        follow_redirects=False,
        trust_env=False,
        timeout=httpx.Timeout(timeout),
        headers={"User-Agent": "AwaitHuman-Webhooks/1.0"},
    )
