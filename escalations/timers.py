"""The embedded default's scheduler: Celery beat's schedule, run by one thread of the ASGI process.

In production Celery beat sends every job of ``settings.CELERY_BEAT_SCHEDULE`` to the workers
(escalation timers, the outbox dispatch, notification and webhook retries, usage reports, …).
The embedded default has no beat and no worker, so this thread runs the very same schedule,
calling each task in-process at its interval: one list of jobs, two ways to run it. Either way
the database is the truth (``next_action_at``, outbox rows, due deliveries) and rows are claimed
with SKIP LOCKED or conditional UPDATEs, so running a job from several places at once, or
missing a run, is harmless.

A commit that owes effects wakes the thread at once (``outbox.outbox_nudge`` calls ``nudge``),
and the outbox dispatch runs then rather than at its next interval. This module is the scheduler
only: it knows the outbox's task by name and imports nothing of the escalations app.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

OUTBOX_TASK = "escalations.tasks.outbox_dispatch_task"

_started = threading.Lock()
_thread: threading.Thread | None = None
_wake = threading.Event()


def _run_task(name: str) -> None:
    from awaithuman.celery import app

    try:
        close_old_connections()
        app.tasks[name].apply(throw=True)
    except Exception:
        logger.exception("scheduled job %s failed; it runs again at its next interval", name)
    finally:
        close_old_connections()


def _run() -> None:
    from awaithuman.celery import app

    # What a worker does at start: import every app's tasks module (autodiscovery), so that
    # the schedule's task names resolve in this process too.
    app.loader.import_default_modules()
    jobs = {
        entry["task"]: float(entry["schedule"]) for entry in settings.CELERY_BEAT_SCHEDULE.values()
    }
    due = dict.fromkeys(jobs, 0.0)
    while True:
        now = time.monotonic()
        for name, every in jobs.items():
            if now >= due[name]:
                due[name] = now + every
                _run_task(name)
        wait = max(0.0, min(due.values()) - time.monotonic())
        if _wait_for_nudge(wait) and OUTBOX_TASK in due:
            due[OUTBOX_TASK] = 0.0


def start_in_process_ticker() -> bool:
    """Start the scheduler once per process; returns whether this call started it."""
    global _thread
    with _started:
        if _thread is not None:
            return False
        _thread = threading.Thread(target=_run, name="awaithuman-scheduler", daemon=True)
        _thread.start()
        return True


def ticking_in_process() -> bool:
    """Whether this process runs the in-process scheduler (the embedded default's server)."""
    return _thread is not None


def nudge() -> bool:
    """Run the outbox dispatch now, if this process runs the scheduler; returns whether it does
    (otherwise the caller queues the dispatch task)."""
    if not ticking_in_process():
        return False
    _wake.set()
    return True


def _wait_for_nudge(timeout: float) -> bool:
    """Sleep up to ``timeout`` or until a commit nudges."""
    woken = _wake.wait(timeout)
    _wake.clear()
    return woken
