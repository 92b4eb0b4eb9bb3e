"""The long-poll ``GET /api/v1/escalations/{id}/wait``, served ahead of Django's request handler.

A Django view, even an async one, pins an OS thread for each request in flight under ASGI; ten
thousand parked waits would be ten thousand threads. This consumer parks on an asyncio future
instead: it authenticates and reads the row in one short trip to the database, holds no
connection and no thread while it waits, and reads once more when woken (DESIGN.md § Platform
choices).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.http import AsyncHttpConsumer
from django.conf import settings

from awaithuman.middleware import new_request_id
from awaithuman.problems import PROBLEM_CONTENT_TYPE, problem_body
from tenants.ids import is_public_id
from tenants.models import Scope
from tenants.ratelimit import rate_limit_hit
from tenants.services import KeyRejected, api_key_authenticate

from .models import Escalation
from .serializers import escalation_data
from .wakeups import dispatcher


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    organization_id: int | None = None
    terminal: bool = False

    @property
    def is_problem(self) -> bool:
        return self.status >= 400


def _problem(status: int, slug: str, detail: str, **headers: str) -> Reply:
    return Reply(status, problem_body(status_code=status, type_slug=slug, detail=detail), headers)


def _bearer(headers: dict[bytes, bytes]) -> str | None:
    raw = headers.get(b"authorization", b"").decode("latin-1").split()
    if len(raw) == 2 and raw[0].lower() == "bearer":
        return raw[1]
    return None


def wait_open(plaintext: str | None, public_id: str) -> Reply:
    """Authenticate, spend one request of the key's budget, read the escalation (sync, short)."""
    if plaintext is None:
        return _problem(
            401,
            "unauthenticated",
            "Authenticate with 'Authorization: Bearer <your API key>'.",
            **{"WWW-Authenticate": 'Bearer realm="api"'},
        )
    try:
        api_key = api_key_authenticate(plaintext)
    except KeyRejected as exc:
        return _problem(
            401, "unauthenticated", str(exc), **{"WWW-Authenticate": 'Bearer realm="api"'}
        )
    # Count first, like the DRF views: every authenticated answer carries the limit headers.
    limit = rate_limit_hit(api_key.key_id, api_key.rate_limit)
    if not limit.allowed:
        reply = _problem(429, "rate-limited", "Too many requests for this API key; slow down.")
    elif not api_key.has_scope(Scope.ESCALATIONS_READ):
        reply = _problem(
            403,
            "forbidden",
            "This API key lacks the 'escalations:read' scope needed for this call.",
        )
    else:
        reply = wait_read(api_key.organization_id, public_id)
    reply.headers.update(limit.headers())
    return reply


def wait_read(organization_id: int, public_id: str) -> Reply:
    if not is_public_id(public_id, "esc"):
        # Not even shaped like an id (PostgreSQL would refuse some, e.g. a NUL byte).
        return _problem(404, "not-found", "No such escalation in this organization.")
    escalation = (
        Escalation.objects.select_related("agent", "assignee__user")
        .prefetch_related("responses__membership__user")
        .filter(organization_id=organization_id, public_id=public_id)
        .first()
    )
    if escalation is None:
        return _problem(404, "not-found", "No such escalation in this organization.")
    return Reply(
        200,
        escalation_data(escalation),
        organization_id=organization_id,
        terminal=escalation.is_terminal,
    )


def parse_timeout(query_string: bytes) -> float | Reply:
    values = parse_qs(query_string.decode("latin-1")).get("timeout")
    if not values:
        return float(settings.WAIT_MAX_SECONDS)
    raw = values[-1]
    try:
        timeout = float(raw)
    except ValueError:
        timeout = -1.0
    if not 0 <= timeout <= settings.WAIT_MAX_SECONDS:
        reply = _problem(
            400,
            "validation-error",
            f"timeout must be a number of seconds from 0 to {settings.WAIT_MAX_SECONDS}.",
        )
        reply.body["errors"] = {
            "timeout": [f"Must be between 0 and {settings.WAIT_MAX_SECONDS}, got {raw[:20]!r}."]
        }
        return reply
    return timeout


class WaitConsumer(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        request_id = new_request_id(
            dict(self.scope["headers"]).get(b"x-request-id", b"").decode("latin-1") or None
        )
        if self.scope["method"] not in ("GET", "HEAD"):
            reply = _problem(405, "method-not-allowed", "Use GET to wait for an escalation.")
            reply.headers["Allow"] = "GET, HEAD"
            await self._send(reply, request_id)
            return
        public_id = self.scope["url_route"]["kwargs"]["public_id"]
        timeout = parse_timeout(self.scope.get("query_string", b""))
        if isinstance(timeout, Reply):
            await self._send(timeout, request_id)
            return
        deadline = time.monotonic() + timeout
        plaintext = _bearer(dict(self.scope["headers"]))

        # Register (and be subscribed) before the first read, so no decision slips between.
        future = await dispatcher.register(public_id)
        try:
            reply = await database_sync_to_async(wait_open)(plaintext, public_id)
            headers = dict(reply.headers)
            while not reply.is_problem and not reply.terminal:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(asyncio.shield(future), remaining)
                except TimeoutError:
                    pass
                else:
                    # Woken: register again first (the wake may be spurious), then re-read.
                    future = await dispatcher.register(public_id)
                # Re-read on a wake, and at the deadline to return the current state.
                assert reply.organization_id is not None
                reply = await database_sync_to_async(wait_read)(reply.organization_id, public_id)
                reply.headers = {**headers, **reply.headers}
        finally:
            dispatcher.unregister(public_id, future)
        await self._send(reply, request_id)

    async def _send(self, reply: Reply, request_id: str) -> None:
        content_type = PROBLEM_CONTENT_TYPE if reply.is_problem else "application/json"
        headers = [
            (b"Content-Type", content_type.encode()),
            (b"X-Request-Id", request_id.encode()),
            (b"Cache-Control", b"no-store"),
        ]
        headers += [(name.encode(), value.encode()) for name, value in reply.headers.items()]
        body = (
            b""
            if self.scope["method"] == "HEAD"
            else json.dumps(reply.body, separators=(",", ":")).encode()
        )
        await self.send_response(reply.status, body, headers=headers)
