"""The bench environment: database, Redis, and the ASGI server as a pinned subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import redis

from . import client

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOG_DIR = (
    Path(tempfile.gettempdir()) / "awaithuman-bench"
)  # server logs of the last run (stderr/stdout)
DB_NAME = "awaithuman_bench"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DATABASE_URL = f"postgresql://postgres@127.0.0.1:5432/{DB_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/3"
SERVER_CPU = 0
CLIENT_CPU = 1
NOFILE = 65536


def bench_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "bench.settings",
            "DATABASE_URL": DATABASE_URL,
            "REDIS_URL": REDIS_URL,
            "TIMERS_IN_PROCESS": "0",
            "DEBUG": "0",
            "SECRET_KEY": "bench-" + "k" * 58,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            # Every request is still counted in Redis; the limit is only raised so a 1,000-wait
            # run on one operator key is not refused (limits are per key).
            "RATE_LIMIT_DEFAULT": "100000000",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def have_taskset() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pin_self() -> bool:
    """Pin the load generator to CPU 1 (the server gets CPU 0)."""
    if (os.cpu_count() or 1) < 2:
        return False
    os.sched_setaffinity(0, {CLIENT_CPU})
    return True


def raise_nofile() -> int:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (NOFILE, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, soft), max(target, hard)))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def prepare_database(agents: int) -> dict:
    """Recreate ``awaithuman_bench``, migrate it, empty Redis db 3, seed org/agents/keys."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    redis.Redis.from_url(REDIS_URL).flushdb()
    env = bench_env()
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )
    out = subprocess.run(
        [sys.executable, "-m", "bench.setup_data", str(agents)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def cpu_cost() -> dict:
    """Run ``bench.cpu_cost`` pinned to the server's CPU; its JSON."""
    cmd = [sys.executable, "-m", "bench.cpu_cost"]
    if have_taskset():
        cmd = ["taskset", "-c", str(SERVER_CPU), *cmd]
    out = subprocess.run(cmd, cwd=ROOT, env=bench_env(), check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def db_connections() -> int:
    """Backends connected to the bench database (the bench's own query is on another db)."""
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [DB_NAME]
        ).fetchone()
    return int(row[0])


async def sample_backends(stop: asyncio.Event, every: float = 0.25) -> dict:
    """Mean backends of the bench database that are active / waiting on a lock, until ``stop``."""
    active = locked = samples = most = 0
    async with await psycopg.AsyncConnection.connect(PG_ADMIN, autocommit=True) as conn:
        while not stop.is_set():
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE state = 'active'), "
                "count(*) FILTER (WHERE wait_event_type = 'Lock') "
                "FROM pg_stat_activity WHERE datname = %s",
                [DB_NAME],
            )
            a, w = await cur.fetchone()
            active, locked, samples, most = active + a, locked + w, samples + 1, max(most, w)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
    return {
        "db_active_mean": active / max(samples, 1),
        "db_lock_waiting_mean": locked / max(samples, 1),
        "db_lock_waiting_max": most,
    }


def _busy_jiffies() -> int:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return sum(values) - values[3] - values[4]  # minus idle and iowait


def _our_jiffies() -> int:
    """CPU of this process, its children (alive or reaped), PostgreSQL and Redis."""
    me, total = os.getpid(), 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        parts = raw.rsplit(")", 1)[1].split()
        pid, ppid = int(entry.name), int(parts[1])
        if pid == me:
            total += sum(int(v) for v in parts[11:15])  # utime stime cutime cstime
        elif ppid == me or comm in ("postgres", "redis-server"):
            total += int(parts[11]) + int(parts[12])
    return total


class CpuMeter:
    """How busy the machine was with *other* work (another session's tests, …) meanwhile."""

    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.busy, self.ours = _busy_jiffies(), _our_jiffies()

    def stop(self) -> dict:
        wall = time.monotonic() - self.wall
        tick = os.sysconf("SC_CLK_TCK")
        other = (_busy_jiffies() - self.busy) - (_our_jiffies() - self.ours)
        return {
            "other_cpu_cores": max(0.0, other / tick / wall),
            "loadavg_1m": float(Path("/proc/loadavg").read_text().split()[0]),
        }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((client.HOST, 0))
        return sock.getsockname()[1]


def server_command(kind: str, app: str, port: int) -> list[str]:
    if kind == "daphne":
        # -v 0: no access log (uvicorn runs with --no-access-log); warnings still logged.
        return [str(BIN / "daphne"), "-v", "0", "-b", client.HOST, "-p", str(port), app]
    if kind == "uvicorn":
        return [
            str(BIN / "uvicorn"),
            app,
            "--host",
            client.HOST,
            "--port",
            str(port),
            "--no-access-log",
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--log-level",
            "warning",
        ]
    raise ValueError(kind)


class Server:
    """One ASGI server process on CPU 0 with a raised open-files limit."""

    def __init__(
        self,
        kind: str,
        app: str = "bench.baseline_app:application",
        env: dict[str, str] | None = None,
    ) -> None:
        self.kind, self.app, self.extra_env = kind, app, env or {}
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        LOG_DIR.mkdir(exist_ok=True)
        self.log_path = LOG_DIR / f"{kind}-{app.split(':')[0].split('.')[-1]}-{self.port}.log"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        inner = " ".join(server_command(self.kind, self.app, self.port))
        cmd = ["bash", "-c", f"ulimit -n {NOFILE} 2>/dev/null || ulimit -n hard; exec {inner}"]
        if have_taskset():
            cmd = ["taskset", "-c", str(SERVER_CPU), *cmd]
        self._log = self.log_path.open("w")
        # bash and taskset exec in place: the pid is the server's own.
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=bench_env() | self.extra_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited; see {self.log_path}")
            try:
                conn = await client.connect(self.port, retries=1)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            try:
                reply = await client.call(conn, client.request("GET", "/healthz", self.port))
                if reply.status == 200:
                    return
            except (client.Closed, TimeoutError):
                pass
            finally:
                conn.close()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not answer /healthz within 60 s")

    def status(self) -> dict[str, int]:
        """VmRSS (KiB) and Threads of the server process."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "Threads"):
                fields[name] = int(value.split()[0])
        return {"rss_kib": fields["VmRSS"], "threads": fields["Threads"]}

    def cpu_seconds(self) -> float:
        parts = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        self.proc = None
