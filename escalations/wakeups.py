"""Waking parked long-polls the moment an escalation becomes terminal — without polling.

Each ASGI process has one ``Dispatcher``: a dict of futures keyed by escalation id. With Redis,
the dispatcher holds a single subscription (one connection per process, however many waiters) and
every decision is PUBLISHed on commit, so a decision made through process B wakes a waiter parked
on process A. Without Redis (the embedded default) there is only one process, and ``publish``
hands the id straight to that process's dispatcher.

A waiter registers (and, with Redis, the subscription is confirmed) *before* it reads the row, so a
decision committed between the read and the park is never missed. If the subscription drops, every
waiter is woken to re-read: a spurious wake costs one read; a missed one would cost a minute.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.db import transaction

from . import hooks
from .models import Escalation

logger = logging.getLogger(__name__)

CHANNEL = "awaithuman:escalation-terminal"


@cache
def _publisher() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def publish(public_id: str) -> None:
    """Announce that ``public_id`` is terminal. Call it on commit of the decision."""
    if settings.REDIS_URL:
        try:
            _publisher().publish(CHANNEL, public_id)
        except redis.RedisError:
            # The decision is committed; waiters will see it at their timeout at the latest.
            logger.exception("could not publish the decision of %s", public_id)
    else:
        dispatcher.wake_threadsafe(public_id)


def publish_many(public_ids: list[str]) -> None:
    """``publish`` for many escalations, in one round trip to Redis."""
    if not settings.REDIS_URL:
        for public_id in public_ids:
            dispatcher.wake_threadsafe(public_id)
        return
    try:
        pipeline = _publisher().pipeline(transaction=False)
        for public_id in public_ids:
            pipeline.publish(CHANNEL, public_id)
        pipeline.execute()
    except redis.RedisError:
        logger.exception("could not publish %d decisions", len(public_ids))


def wake_consumer(events: list[hooks.Event]) -> None:
    """Outbox consumer, the safety net under the decision's own after-commit publish (which a
    crash right after commit would lose): announce every terminal escalation of the batch again.
    A repeated wake costs a waiter one re-read."""
    ids = {event.escalation_id for event in events}
    terminal = Escalation.objects.filter(pk__in=ids, status__in=Escalation.TERMINAL)
    public_ids = list(terminal.values_list("public_id", flat=True))
    if public_ids:
        transaction.on_commit(lambda: publish_many(public_ids))


class Dispatcher:
    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Event | None = None
        self._lock = threading.Lock()

    @property
    def waiting(self) -> int:
        return sum(len(futures) for futures in self._waiters.values())

    async def register(self, public_id: str, *, within: float) -> asyncio.Future[None]:
        """A future resolved when ``public_id`` turns terminal; subscribed when this returns,
        unless Redis could not confirm the subscription ``within`` seconds (an outage): then
        the waiter still gets its future, and its re-read at the deadline is its answer."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # A new event loop (a test, a restarted server): start afresh on it.
            self._reset(loop)
        future: asyncio.Future[None] = loop.create_future()
        self._waiters[public_id].add(future)
        if settings.REDIS_URL:
            if self._listener is None or self._listener.done():
                self._listener = loop.create_task(self._listen())
            assert self._subscribed is not None
            if not self._subscribed.is_set() and within > 0:
                try:
                    await asyncio.wait_for(self._subscribed.wait(), within)
                except TimeoutError:
                    logger.warning("waiting on %s without a Redis subscription", public_id)
        return future

    def unregister(self, public_id: str, future: asyncio.Future[None]) -> None:
        futures = self._waiters.get(public_id)
        if futures is not None:
            futures.discard(future)
            if not futures:
                del self._waiters[public_id]

    def wake(self, public_id: str) -> None:
        for future in self._waiters.pop(public_id, ()):
            if not future.done():
                future.set_result(None)

    def wake_all(self) -> None:
        for public_id in list(self._waiters):
            self.wake(public_id)

    def wake_threadsafe(self, public_id: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.wake(public_id)
        else:
            loop.call_soon_threadsafe(self.wake, public_id)

    def _reset(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._listener is not None and not self._listener.done():
                self._listener.cancel()
            self._waiters = defaultdict(set)
            self._loop = loop
            self._listener = None
            self._subscribed = asyncio.Event()

    async def _listen(self) -> None:
        assert self._subscribed is not None
        backoff = 0.1
        reconnecting = False
        while True:
            client = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=None)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(CHANNEL)
                    self._subscribed.set()
                    backoff = 0.1
                    if reconnecting:
                        # Anything decided while we were not subscribed: every waiter re-reads.
                        self.wake_all()
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            self.wake(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("wait dispatcher lost its Redis subscription; reconnecting")
            finally:
                self._subscribed.clear()
                await client.aclose()
            reconnecting = True
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


dispatcher = Dispatcher()
