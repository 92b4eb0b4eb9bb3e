"""Hooks that higher apps register with (in their ``AppConfig.ready``) to act on escalations.

Escalations must not import notifications or the console; instead they call these after commit.
Each hook receives the escalation's primary key, the event name (``created``, ``level_entered``,
``escalated``, ``reminder``, ``deadline_warning``, ``claimed``, ``released``, ``answered``,
``decided``, ``expired``, ``cancelled``) and a payload that always holds the escalation's
``generation`` at the time: a hook that queues work compares it with the row's
``timer_generation`` before acting, so work queued for a step already passed does nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

EscalationHook = Callable[[int, str, dict[str, Any]], None]

_hooks: list[EscalationHook] = []


def register(hook: EscalationHook) -> None:
    if hook not in _hooks:
        _hooks.append(hook)


def emit(escalation_id: int, event: str, payload: dict[str, Any]) -> None:
    for hook in list(_hooks):
        hook(escalation_id, event, payload)
