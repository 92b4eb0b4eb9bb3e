"""Backup and restore (docs/operations.md): a ``pg_dump`` restored into a new database with
``pg_restore`` keeps every audit chain provable, and keeps the audit table append-only."""

from __future__ import annotations

import re
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.live import Stack, _base_env, need_services

pytestmark = pytest.mark.services


@contextmanager
def new_database(server_url: str, prefix: str) -> Iterator[str]:
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(f"{server_url}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{server_url}/{name}"
    finally:
        with psycopg.connect(f"{server_url}/postgres", autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def audit_verify(database_url: str, workdir: Path) -> str:
    return Stack(_base_env(DATABASE_URL=database_url), workdir).manage("audit_verify")


def test_a_restored_dump_passes_audit_verify_and_stays_append_only(tmp_path: Path) -> None:
    server_url = need_services()[0].rsplit("/", 1)[0]
    with (
        new_database(server_url, "awaithuman_backup") as source,
        new_database(server_url, "awaithuman_restored") as restored,
    ):
        # Some history: an organization, escalations created and answered over HTTP.
        stack = Stack(_base_env(DATABASE_URL=source), tmp_path)
        stack.manage("migrate", "--noinput")
        org = stack.organization()
        base = stack.serve()
        try:
            agent = {"Authorization": f"Bearer {org['agent_key']}"}
            operator = {"Authorization": f"Bearer {org['operator_key']}"}
            for n in range(3):
                created = httpx.post(
                    f"{base}/api/v1/escalations",
                    json={"kind": "approval", "title": f"Refund order #{1040 + n}"},
                    headers=agent,
                )
                assert created.status_code == 201, created.text
                if n < 2:
                    answered = httpx.post(
                        f"{base}/api/v1/escalations/{created.json()['id']}/responses",
                        json={"outcome": "approve" if n == 0 else "reject"},
                        headers=operator,
                    )
                    assert answered.status_code == 201, answered.text
        finally:
            stack.stop()
        before = audit_verify(source, tmp_path)
        assert re.fullmatch(r"org \d+: ok, (1\d|[2-9]\d|\d{3,}) events", before), before

        # The documented procedure.
        dump = tmp_path / "awaithuman.dump"
        subprocess.run(
            ["pg_dump", "--format=custom", "--file", str(dump), source], check=True, timeout=120
        )
        subprocess.run(
            ["pg_restore", "--no-owner", "--exit-on-error", "--dbname", restored, str(dump)],
            check=True,
            timeout=120,
        )

        after = audit_verify(restored, tmp_path)
        assert after == before  # the same chains, the same number of events, all ok
        with psycopg.connect(restored) as connection:
            (decided,) = connection.execute(
                "SELECT count(*) FROM escalations_escalation WHERE status <> 'pending'"
            ).fetchone()
            assert decided == 2
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                connection.execute("UPDATE audit_auditevent SET action = 'rewritten'")
