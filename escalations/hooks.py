"""Hooks that higher apps register with (in their ``AppConfig.ready``) to act on escalations.

Escalations must not import notifications or the console; instead they call these after commit.
Each hook receives the escalation's primary key and the event name.
"""

from __future__ import annotations

from collections.abc import Callable

EscalationHook = Callable[[int, str], None]

_hooks: list[EscalationHook] = []


def register(hook: EscalationHook) -> None:
    if hook not in _hooks:
        _hooks.append(hook)


def emit(escalation_id: int, event: str) -> None:
    for hook in list(_hooks):
        hook(escalation_id, event)
