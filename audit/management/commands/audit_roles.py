"""``manage.py audit_roles --owner ROLE --app ROLE [--sql]``: split the database between an
owner role that runs migrations and an application role that cannot rewrite history.

The most trusted systems never let the process that serves requests own its audit table: an
owner may drop or disable the append-only triggers (``audit.triggers``), and a role that owns the
table is its owner. After this command, on PostgreSQL:

* ``--owner`` owns every table, sequence and function of the schema: run ``migrate`` as it.
* ``--app`` may read and write the application's tables but, on ``audit_auditevent``, only
  SELECT, INSERT and the sealing UPDATE of ``seq``, ``prev_hash`` and ``hash`` (which the
  triggers allow once, from empty to set): no other UPDATE, no DELETE or TRUNCATE, no trigger to
  drop or disable (that needs ownership), no ``session_replication_role`` (superuser only). On
  ``audit_chainhead`` (the one mutable audit row per organization) SELECT, INSERT and UPDATE,
  never DELETE or TRUNCATE. It cannot create objects in the schema.

Run it as a superuser (or a role that may create roles and owns the tables today), after every
``migrate``: it is idempotent, and re-running it grants the application role the new tables.
Roles that do not exist are created with LOGIN and no password; set one with ``ALTER ROLE``.
``--sql`` prints the statements instead of running them. ``docs/database-roles.md`` walks
through a deployment.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from psycopg import sql

from audit.triggers import TABLE as EVENT_TABLE

CHAIN_HEAD_TABLE = "audit_chainhead"
SCHEMA = "public"


def _identifier(name: str) -> sql.Identifier:
    if not name or len(name) > 63:
        raise CommandError(f"{name!r} is not a valid PostgreSQL role name")
    return sql.Identifier(name)


class Command(BaseCommand):
    help = "An owner role for migrations; an app role that can only append and seal audit events."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--owner", required=True, help="role that owns the schema's objects")
        parser.add_argument("--app", required=True, help="role the web and worker processes use")
        parser.add_argument("--sql", action="store_true", help="print the SQL, do not run it")

    def handle(self, *args: Any, **options: Any) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("audit_roles is for PostgreSQL; SQLite has no roles")
        if options["owner"] == options["app"]:
            raise CommandError("--owner and --app must be two different roles")
        with transaction.atomic():
            statements = self._statements(options["owner"], options["app"])
            with connection.cursor() as cursor:
                rendered = [statement.as_string(cursor.connection) for statement in statements]
                if not options["sql"]:
                    for statement in rendered:
                        cursor.execute(statement)
        if options["sql"]:
            self.stdout.write(";\n".join(rendered) + ";")

    def _statements(self, owner_name: str, app_name: str) -> list[sql.Composed]:
        owner, app, schema = _identifier(owner_name), _identifier(app_name), sql.Identifier(SCHEMA)
        statements: list[sql.Composed] = []
        for name, role in ((owner_name, owner), (app_name, app)):
            if not self._role_exists(name):
                statements.append(sql.SQL("CREATE ROLE {} LOGIN").format(role))
        for kind, owned in self._owned_objects():
            statements.append(sql.SQL(f"ALTER {kind} {{}} OWNER TO {{}}").format(owned, owner))
        everything = [
            "REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC",
            "GRANT USAGE, CREATE ON SCHEMA {schema} TO {owner}",
            "REVOKE ALL ON SCHEMA {schema} FROM {app}",
            "GRANT USAGE ON SCHEMA {schema} TO {app}",
            "REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {app}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {app}",
            "REVOKE UPDATE, DELETE ON {events} FROM {app}",
            # Sealing (audit.services.audit_seal) sets these three once; the triggers refuse
            # any other change, and the column grant keeps every other column out of reach.
            "GRANT UPDATE (seq, prev_hash, hash) ON {events} TO {app}",
            "REVOKE DELETE ON {heads} FROM {app}",
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {app}",
            # A table a later migration adds is usable at once; rerunning the command after
            # every migrate narrows any new audit table again.
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema}"
            " GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app}",
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema}"
            " GRANT USAGE, SELECT ON SEQUENCES TO {app}",
        ]
        names = {
            "schema": schema,
            "app": app,
            "owner": owner,
            "events": sql.Identifier(SCHEMA, EVENT_TABLE),
            "heads": sql.Identifier(SCHEMA, CHAIN_HEAD_TABLE),
        }
        statements += [sql.SQL(statement).format(**names) for statement in everything]
        return statements

    def _role_exists(self, name: str) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
            return cursor.fetchone() is not None

    def _owned_objects(self) -> list[tuple[str, sql.Identifier]]:
        """Tables, sequences (not those owned by a table's identity column: they follow their
        table), views and functions of the schema."""
        with connection.cursor() as cursor:
            cursor.execute(
                """
                SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                       ELSE 'TABLE' END, c.relname
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'S', 'v')
                  AND NOT EXISTS (
                      SELECT 1 FROM pg_depend d
                      WHERE d.objid = c.oid AND d.deptype IN ('a', 'i') AND c.relkind = 'S'
                  )
                UNION ALL
                SELECT 'FUNCTION', p.proname
                FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = %s
                ORDER BY 1, 2
                """,
                [SCHEMA, SCHEMA],
            )
            return [(kind, sql.Identifier(SCHEMA, name)) for kind, name in cursor.fetchall()]
