"""The consumers that higher apps register (in their ``AppConfig.ready``) to act on escalations.

Escalations must not import notifications or the console. Instead, every state change writes one
outbox row per interested consumer in its own transaction (``escalations.outbox``), and the
dispatcher later calls the consumer's handler with those events. A handler receives a list of
``Event`` (the escalation's primary key, the event name — ``created``, ``level_entered``,
``escalated``, ``reminder``, ``deadline_warning``, ``claimed``, ``released``, ``answered``,
``decided``, ``expired``, ``cancelled`` — and a payload that always holds the escalation's
``generation`` at the time: a handler that queues work compares it with the row's
``timer_generation`` before acting, so work queued for a step already passed does nothing).

Handlers run inside the dispatcher's transaction, which also deletes their outbox rows: what a
handler writes commits together with "done", so a crash in between repeats the whole batch and
never half of it. Handlers must therefore be idempotent, and anything they send to the outside
world must be scheduled with ``transaction.on_commit``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    escalation_id: int
    event: str
    payload: dict[str, Any]


BatchHandler = Callable[[list[Event]], object]  # what it returns is not used


@dataclass(frozen=True)
class Consumer:
    name: str
    handle: BatchHandler
    events: frozenset[str] | None  # None: every event


_consumers: dict[str, Consumer] = {}


def register(name: str, handle: BatchHandler, *, events: Collection[str] | None = None) -> None:
    """Subscribe ``handle`` (called with a batch of events, in order per escalation) to
    ``events`` (default: all). ``name`` is stored in outbox rows: keep it stable."""
    _consumers[name] = Consumer(name, handle, frozenset(events) if events is not None else None)


def interested(event: str) -> Iterable[str]:
    """The names of the consumers that want ``event``."""
    return [
        name
        for name, consumer in _consumers.items()
        if consumer.events is None or event in consumer.events
    ]


def consumer(name: str) -> Consumer | None:
    return _consumers.get(name)
