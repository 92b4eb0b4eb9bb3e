"""The long-poll ``GET /api/v1/escalations/{id}/wait``, served ahead of Django's request handler.

A Django view, even an async one, pins an OS thread for each request in flight under ASGI; ten
thousand parked waits would be ten thousand threads. This consumer parks on an asyncio future
instead: it authenticates and reads the row in one short trip to the database, holds no
connection and no thread while it waits, and reads once more when woken.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import weakref
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.db import InterfaceError, OperationalError

from awaithuman import metrics
from awaithuman.middleware import new_request_id
from awaithuman.problems import (
    DATABASE_RETRY_AFTER_SECONDS,
    PROBLEM_CONTENT_TYPE,
    problem_body,
)
from tenants.console import current_membership
from tenants.ids import is_public_id
from tenants.middleware.two_factor import session_second_factor_pending
from tenants.models import Membership, Organization, Scope
from tenants.ratelimit import rate_limit_hit
from tenants.services import KeyRejected, api_key_authenticate
from tenants.sessions import session_group, session_user_id

from . import live
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


def wait_authorize(plaintext: str | None) -> Reply:
    """Authenticate and spend one request of the key's budget (sync, short). An empty 200
    reply carries the organization and the rate-limit headers; anything else is the answer."""
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
        reply = Reply(200, {}, organization_id=api_key.organization_id)
    reply.headers.update(limit.headers())
    return reply


def wait_open(plaintext: str | None, public_id: str, *, body: bool = True) -> Reply:
    """``wait_authorize`` then ``wait_read``, in one call (what a waiter does first)."""
    reply = wait_authorize(plaintext)
    if reply.is_problem:
        return reply
    assert reply.organization_id is not None
    read = wait_read_many([(reply.organization_id, public_id)], body=body)[
        (reply.organization_id, public_id)
    ]
    read.headers.update(reply.headers)
    return read


def wait_read(organization_id: int, public_id: str, *, body: bool = True) -> Reply:
    """The escalation as the API shows it; with ``body=False`` a pending one is only checked
    (its body is not needed by a waiter that is going to park)."""
    return wait_read_many([(organization_id, public_id)], body=body)[(organization_id, public_id)]


def wait_read_many(
    keys: list[tuple[int, str]], *, body: bool = True
) -> dict[tuple[int, str], Reply]:
    """``wait_read`` for many (organization id, escalation id) pairs, in one query."""
    wanted = {public_id for _, public_id in keys if is_public_id(public_id, "esc")}
    # Not even shaped like an id: never sent to the database (PostgreSQL refuses a NUL byte).
    rows = {
        escalation.public_id: escalation
        for escalation in Escalation.objects.select_related("agent", "assignee__user").filter(
            public_id__in=wanted
        )
    }
    replies = {}
    for organization_id, public_id in keys:
        escalation = rows.get(public_id)
        if escalation is None or escalation.organization_id != organization_id:
            replies[organization_id, public_id] = _problem(
                404, "not-found", "No such escalation in this organization."
            )
            continue
        terminal = escalation.is_terminal
        replies[organization_id, public_id] = Reply(
            200,
            escalation_data(escalation) if body or terminal else {},
            organization_id=organization_id,
            terminal=terminal,
        )
    return replies


class BatchReader:
    """Re-reads of parked waiters, coalesced: one query on one pool thread for every waiter
    woken (or timed out) while the previous read ran, never one read per waiter in a queue.

    Two hundred decisions that land together wake two hundred waiters; read one by one, the
    last would return after the first's 199 reads.
    """

    def __init__(self) -> None:
        # Per event loop (a server has one; tests start one per test).
        self._batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batch] = (
            weakref.WeakKeyDictionary()
        )

    async def read(self, organization_id: int, public_id: str) -> Reply:
        loop = asyncio.get_running_loop()
        batch = self._batches.get(loop)
        if batch is None:
            batch = self._batches[loop] = _Batch()
        future: asyncio.Future[Reply] = loop.create_future()
        batch.pending.setdefault((organization_id, public_id), []).append(future)
        if batch.drainer is None or batch.drainer.done():
            batch.drainer = loop.create_task(batch.drain())
        reply = await future
        return Reply(reply.status, reply.body, dict(reply.headers), organization_id, reply.terminal)


@dataclass
class _Batch:
    pending: dict[tuple[int, str], list[asyncio.Future[Reply]]] = field(default_factory=dict)
    drainer: asyncio.Task[None] | None = None

    async def drain(self) -> None:
        # Yield once first: the other waiters woken by the same wake-up join this read.
        await asyncio.sleep(0)
        while self.pending:
            batch, self.pending = self.pending, {}
            try:
                replies = await in_thread(wait_read_many)(list(batch))
            except Exception as exc:
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                continue
            for key, futures in batch.items():
                for future in futures:
                    if not future.done():
                        future.set_result(replies[key])


reader = BatchReader()


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


def in_thread(function: Any) -> Any:
    """Run a short database call on the default thread pool, not the one shared thread that
    ``database_sync_to_async`` uses outside a request: waiters open and wake in parallel, and
    the pool (a few threads, each closing its connection after the call) bounds connections."""
    return database_sync_to_async(function, thread_sensitive=False)


class WaitEndpoint:
    """The long-poll as a plain ASGI application (routed in ``awaithuman.asgi``).

    Not a Channels consumer: a consumer per request carries its own dispatch tasks and state for
    the whole wait, which cost several times the memory of the wait itself (bench/RESULTS.md).
    While parked a request holds only its ids, a future and the response headers.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request_id = new_request_id(
            dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1") or None
        )
        try:
            reply = await self._reply(scope)
        except (OperationalError, InterfaceError):
            # The database is away: say so and when to come back, as Django's views do.
            reply = _problem(
                503,
                "unavailable",
                "The database is unavailable for a moment; retry after the Retry-After delay.",
                **{"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
            )
        content_type = PROBLEM_CONTENT_TYPE if reply.is_problem else "application/json"
        headers = [
            (b"Content-Type", content_type.encode()),
            (b"X-Request-Id", request_id.encode()),
            (b"Cache-Control", b"no-store"),
        ]
        headers += [(name.encode(), value.encode()) for name, value in reply.headers.items()]
        body = (
            b""
            if scope["method"] == "HEAD"
            else json.dumps(reply.body, separators=(",", ":")).encode()
        )
        headers.append((b"Content-Length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _reply(self, scope: dict[str, Any]) -> Reply:
        if scope["method"] not in ("GET", "HEAD"):
            reply = _problem(405, "method-not-allowed", "Use GET to wait for an escalation.")
            reply.headers["Allow"] = "GET, HEAD"
            return reply
        public_id = scope["url_route"]["kwargs"]["public_id"]
        timeout = parse_timeout(scope.get("query_string", b""))
        if isinstance(timeout, Reply):
            return timeout
        deadline = time.monotonic() + timeout
        plaintext = _bearer(dict(scope["headers"]))

        # Register (and be subscribed) before the first read, so no decision slips between.
        # Never longer than the wait itself: with Redis away, the deadline's re-read answers.
        future = await dispatcher.register(public_id, within=timeout)
        parked = False
        try:
            reply = await in_thread(wait_open)(plaintext, public_id, body=timeout == 0)
            headers = dict(reply.headers)
            organization_id = reply.organization_id
            parked = metrics.waiter_parked(pending=not reply.is_problem and not reply.terminal)
            while not reply.is_problem and not reply.terminal:
                remaining = deadline - time.monotonic()
                if remaining <= 0 and reply.body:
                    break
                # Past the deadline already (a first read slower than a short timeout), a
                # pending escalation read without its body is read once more, with it.
                if remaining > 0:
                    try:
                        await asyncio.wait_for(asyncio.shield(future), remaining)
                    except TimeoutError:
                        pass
                    else:
                        # Woken: register again first (the wake may be spurious), then re-read.
                        future = await dispatcher.register(
                            public_id, within=deadline - time.monotonic()
                        )
                # Re-read on a wake, and at the deadline to return the current state.
                assert organization_id is not None
                reply = await reader.read(organization_id, public_id)
                reply.headers = {**headers, **reply.headers}
        finally:
            if parked:
                metrics.waiter_unparked(reply.body.get("decision") if reply.terminal else None)
            dispatcher.unregister(public_id, future)
        return reply


wait_endpoint = WaitEndpoint()


# --- The live queue -------------------------------------------------------------------------


class MembershipCache:
    """Which memberships an organization has, per process, at most ``ttl`` seconds old.

    Every socket re-checks its membership on every event, but a thousand sockets of one
    organization share one query per ``ttl`` instead of a query each per event: the send path
    stays free of database work in the common case. ``membership.removed`` (sent by whoever
    removes a member) closes the member's sockets at once and drops the id from the cache; the
    periodic re-read is the safety net for removals that send nothing (a row deleted in admin).
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._members: dict[int, tuple[float, frozenset[int]]] = {}
        self._loading: dict[int, asyncio.Future[frozenset[int]]] = {}

    async def members(self, organization_id: int) -> frozenset[int]:
        cached = self._members.get(organization_id)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return cached[1]
        loop = asyncio.get_running_loop()
        loading = self._loading.get(organization_id)
        if loading is None or loading.get_loop() is not loop:
            # One read for every socket that finds the entry stale at the same moment.
            loading = loop.create_task(self._load(organization_id))
            self._loading[organization_id] = loading
        return await asyncio.shield(loading)

    async def _load(self, organization_id: int) -> frozenset[int]:
        try:
            started = time.monotonic()
            members = await database_sync_to_async(_membership_ids)(organization_id)
            self._members[organization_id] = (started, members)
            return members
        finally:
            self._loading.pop(organization_id, None)

    def discard(self, organization_id: int, membership_id: int) -> None:
        cached = self._members.get(organization_id)
        if cached is not None:
            self._members[organization_id] = (cached[0], cached[1] - {membership_id})

    def clear(self) -> None:
        self._members.clear()


def _membership_ids(organization_id: int) -> frozenset[int]:
    return frozenset(
        Membership.objects.filter(organization_id=organization_id).values_list("pk", flat=True)
    )


def queue_membership(user: Any, session: Any) -> Membership | None:
    """The membership a console session works in (the same choice the console pages make), or
    None while the session still owes its second factor (the pages would redirect it)."""
    membership = current_membership(SimpleNamespace(user=user, session=session))  # type: ignore[arg-type]
    if membership is None:
        return None
    if session_second_factor_pending(user, session, membership.organization):
        return None
    return membership


memberships = MembershipCache(ttl=5.0)

# Close codes (4000–4999 are the application's): the client does not reconnect after these.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_REMOVED = 4403


class QueueConsumer(AsyncJsonWebsocketConsumer):
    """``/ws/queue/``: the organization's live queue for one signed-in member.

    Joins the group ``org.<public id>``, answers ``{"type": "sync"}`` with a snapshot, and
    forwards the delta frames ``escalations.live`` broadcasts, already encoded.

    The socket lives no longer than its session: it also joins the session's group, which a
    sign-out tells to close, and re-reads the session every ``QUEUE_SESSION_RECHECK_SECONDS``
    for the ends that send nothing (a session deleted or expired, a password changed).
    """

    membership_id: int
    membership_public_id: str
    organization_id: int
    group: str
    session_group: str
    session_key: str
    user_id: int
    recheck: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        session_key = self.scope["session"].session_key
        if user is None or not user.is_authenticated or not session_key:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        membership = await database_sync_to_async(queue_membership)(user, self.scope["session"])
        if membership is None:
            await self.close(code=CLOSE_REMOVED)
            return
        live.remember_consumer_loop()
        self.membership_id = membership.pk
        self.membership_public_id = membership.public_id
        self.organization_id = membership.organization_id
        self.user_id = user.pk
        self.session_key = session_key
        self.group = live.organization_group(membership.organization.public_id)
        self.session_group = session_group(session_key)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.channel_layer.group_add(self.session_group, self.channel_name)
        await self.accept()
        self.recheck = asyncio.get_running_loop().create_task(self._recheck_session())

    async def disconnect(self, code: int) -> None:
        if self.recheck is not None and self.recheck is not asyncio.current_task():
            self.recheck.cancel()
        for group in (getattr(self, "group", None), getattr(self, "session_group", None)):
            if group is not None:
                await self.channel_layer.group_discard(group, self.channel_name)

    async def session_ended(self, message: dict[str, Any]) -> None:
        await self._close_session_ended()

    async def _recheck_session(self) -> None:
        interval = settings.QUEUE_SESSION_RECHECK_SECONDS
        while True:
            # Jitter, so the sockets opened by one deploy's reconnect wave do not all read at once.
            await asyncio.sleep(interval * random.uniform(0.8, 1.0))
            if await database_sync_to_async(session_user_id)(self.session_key) != self.user_id:
                await self._close_session_ended()
                return

    async def _close_session_ended(self) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "sync":
            if not await self._still_member():
                return
            snapshot = await database_sync_to_async(self._snapshot)()
            await self.send_json(snapshot)

    def _snapshot(self) -> dict[str, Any]:
        return live.queue_snapshot(Organization(pk=self.organization_id))

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels runs ``close_old_connections`` in a worker thread before *every* handler; for
        # a broadcast that is one thread hop per socket per event. Frames touch no database
        # connection here (the membership cache reads through ``database_sync_to_async``, which
        # does its own cleanup), so they skip it.
        if message["type"] == "queue.frame":
            await self.queue_frame(message)
        else:
            await super().dispatch(message)

    async def queue_frame(self, message: dict[str, Any]) -> None:
        if await self._still_member():
            await self.send(text_data=message["text"])

    async def membership_removed(self, message: dict[str, Any]) -> None:
        if message.get("membership") == self.membership_public_id:
            memberships.discard(self.organization_id, self.membership_id)
            await self._close_removed()

    async def _still_member(self) -> bool:
        if self.membership_id in await memberships.members(self.organization_id):
            return True
        await self._close_removed()
        return False

    async def _close_removed(self) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)
        await self.close(code=CLOSE_REMOVED)
