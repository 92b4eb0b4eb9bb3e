"""Real server processes for end-to-end tests: daphne, Celery worker and beat, on a fresh database.

The test process talks to them over HTTP on 127.0.0.1 only, like an agent would. Each stack
migrates its own database (a SQLite file, or a new PostgreSQL database that is dropped at the end)
so it never shares state with pytest-django's test database.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def services_required() -> bool:
    """In CI a missing service is a failure, never a skip (CI's embedded step deselects the
    ``services`` tests instead: ``-m "not services"``)."""
    return os.environ.get("AWAITHUMAN_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"


def need_services() -> tuple[str, str]:
    """PostgreSQL and Redis URLs for this run; skip locally without them, fail in CI."""
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if database_url.startswith("postgres") and redis_url:
        return database_url, redis_url
    message = "needs DATABASE_URL (PostgreSQL) and REDIS_URL: the CI services run has them"
    if services_required():
        pytest.fail(message)
    pytest.skip(message)


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports for the suite's servers: from 10000 up to the kernel's ephemeral range, split between the
# pytest-xdist workers so that two workers never pick the same one.
_FIRST_PORT = 10000
_next_port = itertools.count()


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104  (held on any interface?), closed at once
        except OSError:
            return False
    return True


def free_port(count: int = 1) -> int:
    """A port P, with P+1 … P+count-1, that nothing holds, for a server started a moment later.

    Not one the kernel hands out (``bind(0)``): those come from the ephemeral range, which is also
    where the local ends of outgoing connections live, and this suite opens thousands of them;
    one can take the port between this check and the server's own bind. Below that range only an
    explicit bind can, and each xdist worker walks its own slice of it.
    """
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    workers = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), worker + 1)
    size = (_ephemeral_low() - _FIRST_PORT) // workers
    start = _FIRST_PORT + worker * size
    for _ in range(size):
        port = start + next(_next_port) % (size - count)
        if all(_bindable(port + offset) for offset in range(count)):
            return port
    raise RuntimeError(f"no {count} free consecutive ports in {start}-{start + size}")


# The commands a user would run (createorg, then createapikey twice), in one process: each
# process pays seconds of CPU to import Django and the apps, and the suite makes dozens of these.
_ORGANIZATION_SCRIPT = """
import io, json
from django.core.management import call_command

def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip()

slug = run("createorg", "Live Test", "--owner", "owner@live.test")
print(json.dumps({
    "slug": slug,
    "agent_key": run("createapikey", "--org", slug, "--agent", "live-bot"),
    "operator_key": run("createapikey", "--org", slug, "--user", "owner@live.test"),
}))
"""


class Stack:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [str(BIN / "python"), "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
        return result.stdout.strip()

    def start(
        self, name: str, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` with the stack's environment (``env`` overrides some of it)."""
        log = self.workdir / f"{name}.log"
        self.logs.append(log)
        process = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env={**self.env, **(env or {})},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def daphne(self, port: int | None = None) -> str:
        """Start a daphne process (on ``port``, e.g. to restart one in place) and wait for it."""
        port = port or free_port()
        self.start(
            f"daphne-{port}",
            str(BIN / "daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "awaithuman.asgi:application",
        )
        return self._ready(port)

    def serve(self, port: int | None = None) -> str:
        """Start ``awaithuman serve`` (Uvicorn, the production web process) and wait for it."""
        port = port or free_port()
        self.start(
            f"serve-{port}",
            str(BIN / "python"), "-m", "awaithuman", "serve", "--host", "127.0.0.1",
            "--port", str(port),
        )  # fmt: skip
        return self._ready(port)

    def _ready(self, port: int) -> str:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    return base
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server on port {port} did not become ready:\n{self.output()}")

    def celery(self) -> None:
        """Start a worker and beat; return once both say they are running (their INFO lines),
        so a test's clock does not start while Celery is still booting."""
        celery = str(BIN / "celery")
        self.start(
            "worker", celery, "-A", "awaithuman", "worker", "--pool", "solo", "--loglevel", "INFO"
        )
        self.beat()
        self._wait_for_log("worker.log", " ready.")
        self._wait_for_log("beat.log", "Scheduler: Sending due task")

    def worker(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """One Celery worker in a single process (the solo pool), so that killing its pid kills
        every task it runs; returns once it is ready."""
        process = self.start(
            name, str(BIN / "celery"), "-A", "awaithuman", "worker", "--pool", "solo",
            "--loglevel", "INFO", "--hostname", f"{name}@%h", env=env,
        )  # fmt: skip
        self._wait_for_log(f"{name}.log", " ready.")
        return process

    def beat(self) -> subprocess.Popen[bytes]:
        return self.start(
            "beat", str(BIN / "celery"), "-A", "awaithuman", "beat", "--loglevel", "INFO",
            "--schedule", str(self.workdir / "beat-schedule"),
        )  # fmt: skip

    def use_smtp(self, host: str, port: int, **extra: str) -> None:
        """Send e-mail through the SMTP server at ``host:port``; ``extra`` settings too."""
        self.env.update(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST=host,
            EMAIL_PORT=str(port),
            **extra,
        )

    def until(self, condition: Any, timeout: float, what: str) -> None:
        """Poll ``condition`` until it holds; fail with every process's log if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"{what} did not happen within {timeout}s:\n{self.output()}")

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of ``query`` on the stack's own PostgreSQL database."""
        import psycopg

        with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as connection:
            return connection.execute(query, params).fetchall()

    def _wait_for_log(self, name: str, text: str, timeout: float = 60) -> None:
        log = self.workdir / name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if log.exists() and text in log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{name} never said {text!r}:\n{self.output()}")

    def organization(self) -> dict[str, Any]:
        """An organization with an agent key and an operator's personal key."""
        return json.loads(self.manage("shell", "--no-imports", "-c", _ORGANIZATION_SCRIPT))

    def output(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def _base_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "TIMERS_IN_PROCESS", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="0",
        LOG_LEVEL="WARNING",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


# --- migrated templates ---------------------------------------------------------------------------
# Every stack starts on a freshly migrated database. Migrating costs several CPU-seconds (a
# process that imports Django and the apps, then the migrations), and the suite starts dozens of
# stacks, so each test process migrates once into a template and every stack gets a copy.
_templates: dict[str, str] = {}
_template_dir = Path(tempfile.mkdtemp(prefix="awaithuman-templates-"))
atexit.register(shutil.rmtree, _template_dir, ignore_errors=True)


def _migrate(env: dict[str, str]) -> None:
    Stack(env, _template_dir).manage("migrate", "--noinput")


def _migrated_sqlite() -> Path:
    if "sqlite" not in _templates:
        template = _template_dir / "template.sqlite3"
        _migrate(_base_env(DATABASE_URL=f"sqlite:///{template}"))
        _templates["sqlite"] = str(template)
    return Path(_templates["sqlite"])


def _copy_sqlite(source: Path, target: Path) -> None:
    """Copy through SQLite's backup API, which also takes what is still in the WAL file."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def _migrated_postgres(database_url: str) -> str:
    """The name of a migrated PostgreSQL database to create stacks' databases from."""
    import psycopg

    if "postgres" not in _templates:
        name = f"awaithuman_template_{os.getpid()}_{secrets.token_hex(3)}"
        admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        atexit.register(_drop_database, admin_url, name)
        _migrate(_base_env(DATABASE_URL=f"{database_url.rsplit('/', 1)[0]}/{name}"))
        _templates["postgres"] = name
    return _templates["postgres"]


def _drop_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def embedded_stack(tmp_path: Path) -> Iterator[Stack]:
    """The embedded default: one daphne process, SQLite, timers ticking inside it."""
    database = tmp_path / "live.sqlite3"
    _copy_sqlite(_migrated_sqlite(), database)
    stack = Stack(_base_env(DATABASE_URL=f"sqlite:///{database}"), tmp_path)
    try:
        yield stack
    finally:
        stack.stop()


class RedisProcess:
    """A redis-server of the test's own on a free port, so a test can stop and restart it
    without disturbing anything else using the machine's Redis. No persistence, as in CI:
    a restart loses whatever was queued."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.workdir / f"redis-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def redis_process(workdir: Path) -> Iterator[RedisProcess]:
    need_services()
    server = RedisProcess(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def production_stack(
    tmp_path: Path, *, redis_url: str | None = None, database_port: int | None = None
) -> Iterator[Stack]:
    """Production mode: PostgreSQL (a fresh database) and Redis; timers ticked by Celery beat.
    With ``database_port`` the processes reach PostgreSQL there (a ``tests.proxy`` in front)."""
    import psycopg

    database_url, redis_url = need_services()[0], redis_url or need_services()[1]
    name = f"awaithuman_live_{secrets.token_hex(4)}"
    admin_url = database_url.rsplit("/", 1)[0] + "/postgres"
    template = _migrated_postgres(database_url)
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    server_url = database_url.rsplit("/", 1)[0]
    if database_port is not None:
        parts = urlsplit(server_url)
        userinfo = parts.netloc.rpartition("@")[0]
        host = f"127.0.0.1:{database_port}"
        server_url = parts._replace(netloc=f"{userinfo}@{host}" if userinfo else host).geturl()
    env = _base_env(
        DATABASE_URL=f"{server_url}/{name}",
        REDIS_URL=redis_url,
        TIMERS_IN_PROCESS="0",
    )
    stack = Stack(env, tmp_path)
    try:
        yield stack
    finally:
        stack.stop()
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
