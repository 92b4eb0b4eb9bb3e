"""Task names are strings in settings (beat's schedule, the routes): each names a real task."""

from __future__ import annotations

from django.conf import settings

from awaithuman.celery import app
from escalations.timers import OUTBOX_TASK
from notifications.deliveries import DELIVER_MANY_TASK, MESSAGES_UPDATE_TASK
from tenants.billing.emails import OWNERS_EMAIL_TASK
from tenants.billing.limits import QUOTA_EMAIL_TASK
from webhooks.sending import DELIVER_TASK


def test_every_scheduled_and_routed_task_name_is_a_registered_task():
    app.loader.import_default_modules()  # what a worker and beat do at start
    named = set(settings.CELERY_TASK_ROUTES) | {
        entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()
    }

    assert named - set(app.tasks) == set()


def test_the_tasks_queued_by_name_are_registered_once_django_is_ready():
    queued_by_name = {
        DELIVER_MANY_TASK,
        MESSAGES_UPDATE_TASK,
        DELIVER_TASK,
        OUTBOX_TASK,
        OWNERS_EMAIL_TASK,
        QUOTA_EMAIL_TASK,
    }

    assert queued_by_name <= set(app.tasks)
