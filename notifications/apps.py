from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from escalations import hooks

        from . import callbacks, channel_answers, fanout

        hooks.register(fanout.on_escalation_event)
        hooks.register(channel_answers.on_escalation_event)  # N3: edit sent messages once decided
        hooks.register(callbacks.on_escalation_event)  # N2: agent callbacks, org webhooks
