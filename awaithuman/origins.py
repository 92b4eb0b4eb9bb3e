"""The websocket's Origin check: exact scheme, host and port, as a browser defines an origin.

Channels' ``AllowedHostsOriginValidator`` compares only the host name with ``ALLOWED_HOSTS``, so a
page served from another port of the same host (another app, a dev server) could open the queue
with an operator's cookies. Here the Origin must equal the origin the socket was opened on (its
``Host`` header, which must itself be allowed, and the scheme the client used, trusting
``X-Forwarded-Proto`` as ``SECURE_PROXY_SSL_HEADER`` does for pages), or be listed exactly in
``CSRF_TRUSTED_ORIGINS``, the same list Django's CSRF check trusts.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the default port filled in; None if it is not an origin."""
    if scheme not in _DEFAULT_PORTS:
        return None
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port


def _trusted() -> set[tuple[str, str, int]]:
    trusted = set()
    for origin in settings.CSRF_TRUSTED_ORIGINS:
        parts = urlsplit(origin)
        parsed = _origin(parts.scheme, parts.netloc)
        if parsed is not None:
            trusted.add(parsed)
    return trusted


def origin_allowed(scope: dict[str, Any]) -> bool:
    headers = dict(scope.get("headers", []))
    raw_origin = headers.get(b"origin", b"").decode("latin-1")
    if not raw_origin:
        return False
    origin_parts = urlsplit(raw_origin)
    origin = _origin(origin_parts.scheme, origin_parts.netloc)
    if origin is None:
        return False
    if origin in _trusted():
        return True
    host = headers.get(b"host", b"").decode("latin-1")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    header, secure_value = settings.SECURE_PROXY_SSL_HEADER or ("", "")
    forwarded = header.removeprefix("HTTP_").replace("_", "-").lower().encode()
    secure = scope.get("scheme") == "wss" or (
        bool(forwarded) and headers.get(forwarded, b"").decode("latin-1") == secure_value
    )
    return origin == _origin("https" if secure else "http", host)


class ExactOriginValidator:
    """ASGI middleware: a websocket whose Origin is not exactly this site's is refused."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
