"""The HTTP call every provider transport makes, and how its failures map to ``TransportError``.

Connection failures and timeouts are transient (the provider may or may not have the message:
the deliver task's claim, not this module, is what prevents a second send to the same person).
"""

from __future__ import annotations

import logging
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any

import httpx
from django.conf import settings
from django.utils import timezone

from .base import TransportError

logger = logging.getLogger(__name__)


@cache
def _client() -> httpx.Client:
    """One client per process, shared by threads: it keeps connections to the providers open
    between sends, and building a client (its TLS context loads the CA bundle) costs ~20 ms —
    more than a whole send to a nearby provider."""
    return httpx.Client(follow_redirects=False)


def post(url: str, **kwargs: Any) -> httpx.Response:
    """POST to a provider; redirects are not followed (no provider API redirects a write)."""
    try:
        return _client().post(url, timeout=settings.NOTIFICATION_HTTP_TIMEOUT, **kwargs)
    except httpx.TimeoutException:
        raise TransportError("The provider did not answer in time.") from None
    except httpx.HTTPError as exc:
        raise TransportError(f"Could not reach the provider ({type(exc).__name__}).") from None


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - timezone.now()).total_seconds())


def transient(response: httpx.Response, message: str) -> TransportError | None:
    """The error for a 429 or 5xx answer (retried), or None for any other status."""
    if response.status_code == 429 or response.status_code >= 500:
        return TransportError(message, retry_after=retry_after(response))
    return None


def json_body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
