from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import pytest
from django.db import connection, transaction

from audit import triggers
from audit.models import AuditEvent
from audit.services import audit_record, audit_seal
from tests.notifications.conftest import smtp, smtp_server

ALICE = {"type": "user", "id": "usr_alice", "label": "alice@example.com"}


@pytest.fixture
def record() -> Callable[..., AuditEvent]:
    """Record one event in its own transaction, as a service would, and return it as it stands
    once sealed (which the dispatcher does right after the commit)."""

    def record(organization_id: int, action: str = "escalation.created", **kwargs: Any):
        kwargs.setdefault("actor", ALICE)
        with transaction.atomic():
            event = audit_record(organization_id=organization_id, action=action, **kwargs)
        audit_seal(organization_id=organization_id)
        event.refresh_from_db()
        return event

    return record


@pytest.fixture
def triggers_off() -> Callable[[], AbstractContextManager[None]]:
    """Lift the append-only triggers for a block, the way an attacker with DDL rights could."""

    @contextmanager
    def triggers_off() -> Iterator[None]:
        triggers.uninstall(connection)
        try:
            yield
        finally:
            triggers.install(connection)

    return triggers_off


# The notification tests' real SMTP server on 127.0.0.1, for the checkpoint e-mail.
__all__ = ["smtp", "smtp_server"]
