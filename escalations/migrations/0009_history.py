"""Full-text search for the history (``escalations.history``), per database.

PostgreSQL: ``search_document``, a stored generated ``tsvector`` over the title (weight A), the
context's reasoning, the action's name and arguments and the decision comment, with a GIN index.
The database keeps it current; it is not a model field (SQLite has no such column), so the ORM
never writes it. Adding it rewrites the table once. Extended statistics on the JSON keys the
history filters on (who decided, the policy) let the planner pick the newest-first index.

SQLite: an FTS5 table keyed by the escalation's rowid, kept current by triggers; when this SQLite
was built without FTS5 nothing is created and the history falls back to substring matching.
"""

# ruff: noqa: S608  (the SQL below is built from constants only, never from input)
from __future__ import annotations

from typing import Any

from django.db import OperationalError, migrations

POSTGRESQL_FORWARD = [
    """
ALTER TABLE escalations_escalation ADD COLUMN search_document tsvector
GENERATED ALWAYS AS (
    setweight(to_tsvector('english'::regconfig, coalesce(title, '')), 'A')
    || to_tsvector('english'::regconfig,
        coalesce(context ->> 'reasoning', '') || ' '
        || coalesce(action ->> 'name', '') || ' '
        || coalesce((action -> 'arguments')::text, '') || ' '
        || coalesce(decision_comment, ''))
) STORED""",
    "CREATE INDEX esc_search_document ON escalations_escalation USING gin (search_document)",
]
# Without statistics on these JSON keys the planner guesses any `decided_by -> 'type' = …` to
# match almost nothing, and answers "decided by a person" with a scan and sort of the whole
# organization (0.8 s at a million rows) instead of reading the newest rows until it has a page
# (12 ms). Statistics on expressions need PostgreSQL 14.
POSTGRESQL_STATISTICS = (
    "CREATE STATISTICS esc_history_keys ON (decided_by -> 'type'), (decided_by -> 'id'), "
    "(policy_snapshot -> 'id') FROM escalations_escalation"
)
POSTGRESQL_BACKWARD = [
    "DROP STATISTICS IF EXISTS esc_history_keys",
    "DROP INDEX IF EXISTS esc_search_document",
    "ALTER TABLE escalations_escalation DROP COLUMN IF EXISTS search_document",
]

# The body of the document, for a row named NEW (triggers) or escalations_escalation (backfill).
SQLITE_BODY = """
    coalesce(json_extract({row}.context, '$.reasoning'), '') || ' '
    || coalesce(json_extract({row}.action, '$.name'), '') || ' '
    || coalesce(json_extract({row}.action, '$.arguments'), '') || ' '
    || coalesce({row}.decision_comment, '')
"""
SQLITE_FORWARD = [
    "CREATE VIRTUAL TABLE escalations_escalation_fts USING fts5("
    "title, body, tokenize = 'porter unicode61')",
    "INSERT INTO escalations_escalation_fts (rowid, title, body) "
    f"SELECT id, title, {SQLITE_BODY.format(row='escalations_escalation')} "
    "FROM escalations_escalation",
    "CREATE TRIGGER escalations_escalation_fts_insert AFTER INSERT ON escalations_escalation "
    "BEGIN INSERT INTO escalations_escalation_fts (rowid, title, body) "
    f"VALUES (NEW.id, NEW.title, {SQLITE_BODY.format(row='NEW')}); END",
    "CREATE TRIGGER escalations_escalation_fts_update "
    "AFTER UPDATE OF title, context, action, decision_comment ON escalations_escalation "
    "BEGIN DELETE FROM escalations_escalation_fts WHERE rowid = OLD.id; "
    "INSERT INTO escalations_escalation_fts (rowid, title, body) "
    f"VALUES (NEW.id, NEW.title, {SQLITE_BODY.format(row='NEW')}); END",
    "CREATE TRIGGER escalations_escalation_fts_delete AFTER DELETE ON escalations_escalation "
    "BEGIN DELETE FROM escalations_escalation_fts WHERE rowid = OLD.id; END",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS escalations_escalation_fts_insert",
    "DROP TRIGGER IF EXISTS escalations_escalation_fts_update",
    "DROP TRIGGER IF EXISTS escalations_escalation_fts_delete",
    "DROP TABLE IF EXISTS escalations_escalation_fts",
]


def _fts5_available(schema_editor: Any) -> bool:
    with schema_editor.connection.cursor() as cursor:
        try:
            cursor.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
        except OperationalError:
            return False
        cursor.execute("DROP TABLE temp.fts5_probe")
    return True


def forward(apps: Any, schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    statements = []
    if vendor == "postgresql":
        statements = list(POSTGRESQL_FORWARD)
        if schema_editor.connection.pg_version >= 140000:
            statements += [POSTGRESQL_STATISTICS, "ANALYZE escalations_escalation"]
    elif vendor == "sqlite" and _fts5_available(schema_editor):
        statements = SQLITE_FORWARD
    for statement in statements:
        schema_editor.execute(statement)


def backward(apps: Any, schema_editor: Any) -> None:
    vendor = schema_editor.connection.vendor
    statements = {"postgresql": POSTGRESQL_BACKWARD, "sqlite": SQLITE_BACKWARD}.get(vendor, [])
    for statement in statements:
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [
        ("escalations", "0008_insights_indexes"),
    ]

    operations = [migrations.RunPython(forward, backward)]
