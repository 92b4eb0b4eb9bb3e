from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from escalations import hooks

        from . import callbacks, channel_answers, fanout, services, webhooks

        hooks.register(
            "notifications.fanout",
            fanout.on_escalation_events,
            events=services.NOTIFYING_EVENTS,
        )
        # Edit the messages already sent once decided.
        hooks.register(
            "notifications.messages",
            channel_answers.on_escalation_events,
            events=channel_answers.TERMINAL_EVENTS,
        )
        # Agent callbacks and organization webhooks.
        hooks.register(
            "notifications.callbacks",
            callbacks.on_escalation_events,
            events=webhooks.EVENT_TYPES,
        )
