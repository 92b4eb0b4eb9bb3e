"""The embedded default's scheduler: a daemon thread in the ASGI process ticks the due
escalations, seals new audit events and dispatches the outbox.

In production Celery beat sends ``escalations.tasks.timers_tick`` and
``escalations.tasks.outbox_dispatch_task`` every second instead. Either way the database is the
truth (``next_action_at``, the outbox rows) and rows are claimed with SKIP LOCKED, so ticking from
several places at once, or missing a tick, is harmless. A commit that owes effects wakes the
thread at once (``outbox.outbox_nudge``), so effects do not wait for the next tick.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections

from audit.services import audit_seal

from . import idempotency, outbox, services

logger = logging.getLogger(__name__)

_started = threading.Lock()
_thread: threading.Thread | None = None
PURGE_EVERY_SECONDS = 3600


def _run() -> None:
    last_purge = 0.0
    while True:
        try:
            close_old_connections()
            services.timers_due()
            audit_seal()
            outbox.outbox_drain()
            if time.monotonic() - last_purge > PURGE_EVERY_SECONDS:
                idempotency.idempotency_purge()
                last_purge = time.monotonic()
        except Exception:
            logger.exception("timer tick failed; retrying")
        finally:
            close_old_connections()
        outbox.wait_for_nudge(settings.TIMER_TICK_SECONDS)


def start_in_process_ticker() -> bool:
    """Start the ticker once per process; returns whether this call started it."""
    global _thread
    with _started:
        if _thread is not None:
            return False
        _thread = threading.Thread(target=_run, name="awaithuman-timers", daemon=True)
        _thread.start()
        return True


def ticking_in_process() -> bool:
    """Whether this process runs the in-process ticker (the embedded default's server)."""
    return _thread is not None
