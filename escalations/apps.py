from __future__ import annotations

from django.apps import AppConfig


class EscalationsConfig(AppConfig):
    name = "escalations"
    verbose_name = "Escalations"

    def ready(self) -> None:
        from . import hooks, live

        # The live queue is a subscriber like any other: it learns of events after commit.
        hooks.register(live.queue_broadcast)
