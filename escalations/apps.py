from __future__ import annotations

from django.apps import AppConfig


class EscalationsConfig(AppConfig):
    name = "escalations"
    verbose_name = "Escalations"

    def ready(self) -> None:
        from . import hooks, live, wakeups

        # The live queue is a consumer like any other: it learns of events from the outbox.
        hooks.register("live.queue", live.queue_frames, events=live.QUEUE_EVENTS)
        hooks.register("wakeups", wakeups.wake_consumer, events={"decided", "expired", "cancelled"})
