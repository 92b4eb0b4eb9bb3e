"""Database triggers that make the audit event table append-only.

The hash chain *detects* tampering; these triggers *refuse* it, so that a bug, a stray admin
action or a hand-typed ``DELETE`` cannot remove evidence without first dropping a trigger — which
needs DDL rights the application role can be denied. The chain head stays mutable by design.

The one UPDATE allowed is the sealing of an unsealed event (``audit.services.audit_seal``):
``seq``, ``prev_hash`` and ``hash`` go from empty to set, and every other column stays as it was.
A sealed event can never change again.

PostgreSQL refuses UPDATE and DELETE per row and TRUNCATE per statement. SQLite has no TRUNCATE
(its ``DELETE FROM t`` fires the row trigger) and no stored functions, so each trigger raises
inline.

``install`` and ``uninstall`` are idempotent. ``uninstall`` exists for test teardown: flushing the
test database (pytest-django, between transactional tests) truncates or deletes every table.
"""

from __future__ import annotations

from django.db.backends.base.base import BaseDatabaseWrapper

TABLE = "audit_auditevent"
MESSAGE = "audit events are append-only"

_POSTGRESQL_INSTALL = [
    f"""
    CREATE OR REPLACE FUNCTION audit_event_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND OLD.seq IS NULL AND NEW.seq IS NOT NULL
            AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL
            AND (NEW.id, NEW.organization_id, NEW.action, NEW.actor, NEW.target, NEW.data,
                 NEW.created_at)
                IS NOT DISTINCT FROM (OLD.id, OLD.organization_id, OLD.action, OLD.actor,
                                      OLD.target, OLD.data, OLD.created_at) THEN
            RETURN NEW;  -- sealing
        END IF;
        RAISE EXCEPTION '{MESSAGE}: % refused on %', TG_OP, TG_TABLE_NAME;
    END
    $$
    """,
    f"DROP TRIGGER IF EXISTS audit_event_no_update_delete ON {TABLE}",
    f"""
    CREATE TRIGGER audit_event_no_update_delete BEFORE UPDATE OR DELETE ON {TABLE}
    FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change()
    """,
    f"DROP TRIGGER IF EXISTS audit_event_no_truncate ON {TABLE}",
    f"""
    CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_refuse_change()
    """,
]
_POSTGRESQL_UNINSTALL = [
    f"DROP TRIGGER IF EXISTS audit_event_no_update_delete ON {TABLE}",
    f"DROP TRIGGER IF EXISTS audit_event_no_truncate ON {TABLE}",
    "DROP FUNCTION IF EXISTS audit_event_refuse_change()",
]

_SQLITE_UNINSTALL = [
    "DROP TRIGGER IF EXISTS audit_event_no_update",
    "DROP TRIGGER IF EXISTS audit_event_no_delete",
]
_SQLITE_NOT_SEALING = " OR ".join(
    ["OLD.seq IS NOT NULL", "NEW.seq IS NULL", "NEW.prev_hash IS NULL", "NEW.hash IS NULL"]
    + [
        f"NEW.{column} IS NOT OLD.{column}"
        for column in ("id", "organization_id", "action", "actor", "target", "data", "created_at")
    ]
)
_SQLITE_INSTALL = [
    *_SQLITE_UNINSTALL,
    f"""
    CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON {TABLE}
    WHEN {_SQLITE_NOT_SEALING}
    BEGIN
        SELECT RAISE(ABORT, '{MESSAGE}: UPDATE refused on {TABLE}');
    END
    """,
    f"""
    CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON {TABLE}
    BEGIN
        SELECT RAISE(ABORT, '{MESSAGE}: DELETE refused on {TABLE}');
    END
    """,
]

_STATEMENTS = {
    "postgresql": (_POSTGRESQL_INSTALL, _POSTGRESQL_UNINSTALL),
    "sqlite": (_SQLITE_INSTALL, _SQLITE_UNINSTALL),
}


def _statements(connection: BaseDatabaseWrapper) -> tuple[list[str], list[str]]:
    try:
        return _STATEMENTS[connection.vendor]
    except KeyError:
        # Failing the migration beats running with an audit trail that can be silently edited.
        raise NotImplementedError(
            f"append-only audit triggers are not implemented for {connection.vendor}"
        ) from None


def install(connection: BaseDatabaseWrapper) -> None:
    """Make the audit event table refuse UPDATE, DELETE and (PostgreSQL) TRUNCATE."""
    with connection.cursor() as cursor:
        for statement in _statements(connection)[0]:
            cursor.execute(statement)


def uninstall(connection: BaseDatabaseWrapper) -> None:
    """Drop the triggers installed by ``install``; a no-op where they are absent."""
    with connection.cursor() as cursor:
        for statement in _statements(connection)[1]:
            cursor.execute(statement)
