"""The embedded default's delivery sweep: a daemon thread instead of Celery beat.

Started by the ASGI process (``awaithuman.asgi``) and on the first escalation event a process
sees (``fanout.on_escalation_event``), when ``TIMERS_IN_PROCESS`` is on. It runs
``tasks.deliveries_due``, which (tasks being eager) sends due retries and stuck deliveries in
this thread.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

_started = threading.Lock()
_thread: threading.Thread | None = None


def _run() -> None:
    from .tasks import deliveries_due

    while True:
        time.sleep(settings.NOTIFICATION_SWEEP_SECONDS)
        try:
            close_old_connections()
            deliveries_due()
        except Exception:
            logger.exception("delivery sweep failed; retrying")
        finally:
            close_old_connections()


def start_in_process_sweeper() -> bool:
    """Start the sweep once per process; returns whether this call started it."""
    global _thread
    with _started:
        if _thread is not None:
            return False
        _thread = threading.Thread(target=_run, name="awaithuman-deliveries", daemon=True)
        _thread.start()
        return True
