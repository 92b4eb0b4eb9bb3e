"""Per-key rate limits, shared by every process through Redis (in-process without Redis).

A moving window (the ``limits`` package's ``MovingWindowRateLimiter``): a key may make ``limit``
requests in *any* ``window`` seconds, not per calendar window, so no burst of twice the limit
fits around a window boundary. In Redis each key is one list of its recent request times, trimmed
to the limit, updated by one Lua script per request. A refused request is not recorded, so a
client hammering a full window does not push its own reset further away.

Limits are per key, never per organization, so 200 agents with 200 keys never throttle one
another. Only authenticated requests are counted: a request with a bad or unknown key never
spends a real key's budget.

When Redis cannot be reached, each process counts on its own (the embedded default's in-memory
window) for a few seconds before trying Redis again: an outage loosens limits to per-process ones
rather than turning every API call into a 500 — agents keep escalating while Redis restarts.

Headers follow draft-ietf-httpapi-ratelimit-headers (-08 and later):
``RateLimit-Policy: "key";q=600;w=60`` and ``RateLimit: "key";r=599;t=42``, where ``t`` is the
time until the oldest request in the window leaves it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from functools import cache

import redis
from django.conf import settings
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter

from awaithuman import metrics

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


_memory = MovingWindowRateLimiter(MemoryStorage())
_redis_down_until = 0.0


@cache
def _redis(url: str) -> MovingWindowRateLimiter:
    storage = RedisStorage(
        url, key_prefix="awaithuman:rl", socket_timeout=2, socket_connect_timeout=2
    )
    return MovingWindowRateLimiter(storage)


def _hit(item: RateLimitItemPerSecond, key_id: str) -> tuple[bool, float, int]:
    """(allowed, reset time, remaining) from Redis, or in-process while Redis is away."""
    global _redis_down_until
    limiter = _memory
    if settings.REDIS_URL and time.monotonic() >= _redis_down_until:
        limiter = _redis(settings.REDIS_URL)
        try:
            allowed = limiter.hit(item, key_id)
            reset_time, remaining = limiter.get_window_stats(item, key_id)
            return allowed, reset_time, remaining
        except redis.RedisError as exc:
            _redis_down_until = time.monotonic() + REDIS_RETRY_SECONDS
            logger.warning("rate limits: Redis unavailable (%s); counting in-process for now", exc)
            limiter = _memory
    allowed = limiter.hit(item, key_id)
    reset_time, remaining = limiter.get_window_stats(item, key_id)
    return allowed, reset_time, remaining


def rate_limit_hit(key_id: str, limit: int | None = None) -> RateLimitState:
    """Count one request against ``key_id`` and say whether it may proceed."""
    limit = limit or settings.RATE_LIMIT_DEFAULT
    window = settings.RATE_LIMIT_WINDOW_SECONDS
    allowed, reset_time, remaining = _hit(RateLimitItemPerSecond(limit, window), key_id)
    if not allowed:
        metrics.rate_limit_refused()
    return RateLimitState(
        limit=limit,
        remaining=max(0, remaining),
        reset_seconds=max(1, math.ceil(reset_time - time.time())),
        window_seconds=window,
        allowed=allowed,
    )
