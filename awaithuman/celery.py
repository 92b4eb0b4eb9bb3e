"""Celery application.

With ``REDIS_URL`` set, tasks go to Redis and run on ``celery -A awaithuman worker``; beat drives
the timers. Without it (the embedded default) ``task_always_eager`` runs every task in-process and
the ASGI process ticks the timers itself (see ``escalations.timers``).
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "awaithuman.settings")

app = Celery("awaithuman")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
