"""Give each pytest-xdist worker its own Redis database, before Django reads its settings.

pytest-django already gives each worker its own test database (``…_gw0``, ``…_gw1``). Redis is
shared, and two workers on one Redis database would cross: organizations of both test databases
have the same primary keys, so live-queue groups and wake-up channels collide, and the Celery
workers of two live stacks would take each other's tasks. Loaded with ``-p`` (pyproject's
``addopts``), so this runs before pytest-django imports the settings; the change to the
environment reaches the servers the tests start, too.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

REDIS_DATABASES = 16  # redis-server's default


def _worker_redis_url(url: str, worker: str) -> str:
    parts = urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    database = base + int(worker.removeprefix("gw"))
    if database >= REDIS_DATABASES:
        raise RuntimeError(
            f"REDIS_URL {url} leaves no Redis database for xdist worker {worker}: use a lower one"
        )
    return parts._replace(path=f"/{database}").geturl()


_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = _worker_redis_url(os.environ["REDIS_URL"], _worker)
