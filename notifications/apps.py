from __future__ import annotations

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Notifications"

    def ready(self) -> None:
        from audit.checkpoints import on_checkpoint
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
        # A redacted escalation's messages lose its payloads too.
        hooks.register("notifications.redaction", webhooks.messages_redact, events={"redacted"})
        # Signed audit checkpoints go to the organization's webhooks that want them.
        on_checkpoint(webhooks.checkpoint_messages_create)
