"""Liveness and readiness for load balancers: no authentication, no detail leaked.

``/readyz`` answers within ``READY_DEADLINE_SECONDS`` whatever the state of its dependencies: the
checks run on a small thread pool of their own, and one that has not answered by the deadline
counts as down (a black-holed database would otherwise hold the probe for the whole connect or
pool timeout, and orchestrators give up on slow probes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

READY_DEADLINE_SECONDS = 0.9
_probes = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    probes: dict[str, Callable[[], bool]] = {"database": _database_ok}
    if settings.REDIS_URL:
        probes["redis"] = _redis_ok
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    running = {name: _probes.submit(probe) for name, probe in probes.items()}
    checks = {name: _result(name, future, deadline) for name, future in running.items()}
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    return JsonResponse(body, status=200 if ready else 503)


def _result(name: str, future: Future[bool], deadline: float) -> bool:
    try:
        return future.result(timeout=max(0.0, deadline - time.monotonic()))
    except FutureTimeout:
        logger.warning("readiness: the %s check did not answer in time", name)
        return False


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        logger.exception("readiness: database check failed")
        return False
    finally:
        # This thread is the probe pool's, not a request's: give the connection back.
        connection.close()


def _redis_ok() -> bool:
    try:
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        logger.exception("readiness: redis check failed")
        return False
