from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from escalations import hooks

        from . import deliveries, fanout, tasks  # noqa: F401  tasks: registers the Celery tasks

        hooks.register(
            "notifications.fanout",
            fanout.deliveries_fan_out_many,
            events=fanout.NOTIFYING_EVENTS,
        )
        # Edit the messages already sent once decided.
        hooks.register(
            "notifications.messages",
            deliveries.messages_update_on_terminal,
            events=deliveries.TERMINAL_EVENTS,
        )
