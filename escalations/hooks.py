"""Hooks that higher apps register with (in their ``AppConfig.ready``) to act on escalations.

Escalations must not import notifications or the console; instead they call these after commit.
Each hook receives the escalation's primary key, the event name (``created``, ``level_entered``,
``escalated``, ``reminder``, ``deadline_warning``, ``claimed``, ``released``, ``answered``,
``decided``, ``expired``, ``cancelled``) and a payload that always holds the escalation's
``generation`` at the time: a hook that queues work compares it with the row's
``timer_generation`` before acting, so work queued for a step already passed does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

EscalationHook = Callable[[int, str, dict[str, Any]], None]

_hooks: list[EscalationHook] = []


def register(hook: EscalationHook) -> None:
    if hook not in _hooks:
        _hooks.append(hook)


def emit(escalation_id: int, event: str, payload: dict[str, Any]) -> None:
    """Run every hook; one that fails is logged and the rest still run.

    Hooks run after commit: the change is made and must not become an error for whoever made
    it, nor keep the other hooks (the live queue, notifications, callbacks) from running.
    """
    for hook in list(_hooks):
        try:
            hook(escalation_id, event, payload)
        except Exception:
            logger.exception(
                "escalation hook %s failed on %s of escalation %s",
                getattr(hook, "__qualname__", hook),
                event,
                escalation_id,
            )
