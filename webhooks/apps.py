from __future__ import annotations

from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "webhooks"
    verbose_name = "Webhooks"

    def ready(self) -> None:
        from audit.checkpoints import on_checkpoint
        from escalations import hooks

        from . import services, tasks  # noqa: F401  tasks: registers the Celery tasks

        # The consumer names are stored in outbox rows: they keep the prefix of the app these
        # consumers were born in, so rows written before the move are still handled.
        hooks.register(
            "notifications.callbacks",
            services.on_escalation_events,
            events=services.EVENT_TYPES,
        )
        # A redacted escalation's messages lose its payloads too.
        hooks.register("notifications.redaction", services.messages_redact, events={"redacted"})
        # Signed audit checkpoints go to the organization's webhooks that want them.
        on_checkpoint(services.checkpoint_messages_create)
