"""Celery application.

With ``REDIS_URL`` set, tasks go to Redis and run on ``celery -A awaithuman worker``; beat drives
the timers. Without it (the embedded default) ``task_always_eager`` runs every task in-process and
the ASGI process ticks the timers itself (see ``escalations.timers``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from kombu.exceptions import OperationalError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "awaithuman.settings")

logger = logging.getLogger(__name__)

app = Celery("awaithuman")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _trace_worker_process(**kwargs: Any) -> None:
    """Tracing (if on) starts in each pool process, after the fork: the exporter's thread
    would not survive it."""
    from awaithuman.telemetry import telemetry_setup

    telemetry_setup()


def enqueue(task: Any, *calls: tuple[Any, ...]) -> int:
    """Queue ``task`` once per argument tuple in ``calls``; return how many were queued.

    Callers enqueue after their transaction has committed, so a broker outage (Redis restarting)
    must not turn a committed change into an error for the person who made it. The first
    publish error is logged and the remaining calls are not attempted (each would wait for the
    same dead broker): deliveries and webhook messages stay due in the database and their sweeps
    queue them again once the broker is back.
    """
    queued = 0
    for args in calls:
        try:
            task.delay(*args)
        except OperationalError:
            logger.exception(
                "could not queue %s (%d of %d calls): the broker is unreachable",
                task.name,
                len(calls) - queued,
                len(calls),
            )
            break
        queued += 1
    return queued
