from __future__ import annotations

from django.apps import AppConfig


class EscalationsConfig(AppConfig):
    name = "escalations"
    verbose_name = "Escalations"

    def ready(self) -> None:
        from audit.services import on_unsealed_commit

        from . import hooks, live, outbox, wakeups

        # New audit events are sealed by the same dispatch that runs the outbox.
        on_unsealed_commit(outbox.nudge_on_commit)

        # The live queue is a consumer like any other: it learns of events from the outbox.
        hooks.register("live.queue", live.queue_frames, events=live.QUEUE_EVENTS)
        hooks.register("wakeups", wakeups.wake_consumer, events={"decided", "expired", "cancelled"})
