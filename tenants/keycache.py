"""A per-process cache of API keys, so that an agent's requests after its first skip the lookup.

An entry is the ``ApiKey`` row with its organization, agent and member loaded, kept at most
``MAX_AGE_SECONDS``. Anything that could change what a key may do — the key itself, its agent,
its member or that member's user, its organization — calls ``invalidate`` once its transaction
commits (``TenantsConfig.ready`` connects the models' save and delete signals to it, so Django
admin and every service are covered). ``invalidate`` empties this process's cache and bumps a
generation counter in Redis; every other process reads that counter at most every
``CHECK_SECONDS`` and empties its own cache when it moved, so a revoked key is refused
everywhere within that time. Without Redis (the embedded default: one process) the local
counter is the whole story. If Redis cannot be read, the cache is not trusted: every request
looks its key up again.

Cached rows are shared between the requests of a process: treat ``request.api_key`` and its
related objects as read-only.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import cast

import redis
from django.conf import settings
from django.db import transaction

from .models import ApiKey

logger = logging.getLogger(__name__)

CHECK_SECONDS = 0.5
MAX_AGE_SECONDS = 60.0
MAX_ENTRIES = 10_000
GENERATION_KEY = "awaithuman:api-key-generation"

_lock = threading.Lock()
_entries: dict[str, tuple[ApiKey, float]] = {}
_epoch = 0  # moves on every local clear: a lookup that raced with one is not cached
_generation: bytes | None = None
_checked_at = 0.0
_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
        )
    return _client


def _current() -> bool:
    """Whether the cached entries may be used: re-reads the shared generation when due."""
    global _generation, _checked_at
    if not settings.REDIS_URL:
        return True
    now = time.monotonic()
    if now - _checked_at < CHECK_SECONDS:
        return True
    try:
        # redis-py types a reply as sync-or-async; this client is the synchronous one.
        generation = cast("bytes | None", _redis().get(GENERATION_KEY))
    except redis.RedisError:
        _clear()
        return False
    with _lock:
        if generation != _generation:
            _clear_locked()
            _generation = generation
        _checked_at = now
    return True


def _clear_locked() -> None:
    global _epoch
    _entries.clear()
    _epoch += 1


def _clear() -> None:
    with _lock:
        _clear_locked()


def get(key_id: str) -> tuple[ApiKey | None, int | None]:
    """The cached key (or None), and the epoch to pass to ``remember`` after a lookup (None:
    do not cache, the shared counter could not be read)."""
    if not _current():
        return None, None
    epoch = _epoch
    entry = _entries.get(key_id)
    if entry is None or time.monotonic() - entry[1] > MAX_AGE_SECONDS:
        return None, epoch
    return entry[0], epoch


def remember(api_key: ApiKey, epoch: int | None) -> None:
    """Cache a key looked up from the database, unless the cache was cleared since ``get``
    (the row read may predate the change that cleared it)."""
    with _lock:
        if epoch is None or epoch != _epoch:
            return
        if len(_entries) >= MAX_ENTRIES:
            _entries.clear()
        _entries[api_key.key_id] = (api_key, time.monotonic())


def invalidate() -> None:
    """Forget every cached key, here at once and in every process within ``CHECK_SECONDS``.

    Call it after the change has committed (a process that re-read the key before the commit
    would cache the old row again); ``invalidate_on_commit`` does that."""
    global _checked_at
    _clear()
    if settings.REDIS_URL:
        try:
            _redis().incr(GENERATION_KEY)
        except redis.RedisError:
            # Other processes cannot read the counter either, so they are not trusting theirs.
            logger.warning("could not announce an API key change to other processes")
        _checked_at = 0.0


def invalidate_on_commit(**_: object) -> None:
    """A model signal receiver: empty this process's cache now (so that its own next request
    sees the change, committed or not yet), and ``invalidate`` everywhere once it commits —
    which also drops a row that a concurrent request re-read before the commit."""
    _clear()
    transaction.on_commit(invalidate)
