"""Per-key rate limits, shared by every process through Redis (in-process without Redis).

A fixed window per key: ``INCR`` + ``EXPIRE`` in one round trip. Limits are per key, never per
organization, so 200 agents with 200 keys never throttle one another. Only authenticated requests
are counted: a request with a bad or unknown key never spends a real key's budget.

When Redis cannot be reached, each process counts on its own (the embedded default's counter)
for a few seconds before trying Redis again: an outage loosens limits to per-process ones rather
than turning every API call into a 500 — agents keep escalating while Redis restarts.

Headers follow draft-ietf-httpapi-ratelimit-headers (-08 and later):
``RateLimit-Policy: "key";q=600;w=60`` and ``RateLimit: "key";r=599;t=42``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings

POLICY_NAME = "key"
# After a Redis error, count in-process for this long before trying Redis again.
REDIS_RETRY_SECONDS = 5.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateLimitState:
    limit: int
    remaining: int
    reset_seconds: int
    window_seconds: int
    allowed: bool

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Policy": f'"{POLICY_NAME}";q={self.limit};w={self.window_seconds}',
            "RateLimit": f'"{POLICY_NAME}";r={self.remaining};t={self.reset_seconds}',
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.reset_seconds)
        return headers


class _MemoryCounter:
    """The embedded default's counter: one process, so a dict under a lock is the whole truth."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, int], int] = {}

    def incr(self, key_id: str, window_index: int) -> int:
        with self._lock:
            if len(self._counts) > 100_000:
                self._counts = {k: v for k, v in self._counts.items() if k[1] >= window_index}
            count = self._counts.get((key_id, window_index), 0) + 1
            self._counts[(key_id, window_index)] = count
            return count


_memory = _MemoryCounter()
_redis_down_until = 0.0


@cache
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _incr_redis(key_id: str, window_index: int, window: int) -> int:
    name = f"awaithuman:rl:{key_id}:{window_index}"
    pipe = _redis(settings.REDIS_URL).pipeline(transaction=True)
    pipe.incr(name)
    pipe.expire(name, window + 1)
    count, _ = pipe.execute()
    return int(count)


def _count(key_id: str, window_index: int, window: int) -> int:
    global _redis_down_until
    if settings.REDIS_URL and time.monotonic() >= _redis_down_until:
        try:
            return _incr_redis(key_id, window_index, window)
        except redis.RedisError as exc:
            _redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            logger.warning("rate limits: Redis unavailable (%s); counting in-process for now", exc)
    return _memory.incr(key_id, window_index)


def rate_limit_hit(key_id: str, limit: int | None = None) -> RateLimitState:
    """Count one request against ``key_id`` and say whether it may proceed."""
    limit = limit or settings.RATE_LIMIT_DEFAULT
    window = settings.RATE_LIMIT_WINDOW_SECONDS
    now = time.time()
    window_index = int(now // window)
    count = _count(key_id, window_index, window)
    reset = max(1, math.ceil((window_index + 1) * window - now))
    return RateLimitState(
        limit=limit,
        remaining=max(0, limit - count),
        reset_seconds=reset,
        window_seconds=window,
        allowed=count <= limit,
    )
