"""The server installs like a tool: ``python -m build`` makes a wheel that, installed into a fresh
virtual environment with no checkout around, gives a working ``awaithuman dev``: templates,
static files and migrations come with it.

The wheel is built the standard way (``python -m build --wheel``, whose isolated build
environment installs setuptools from the package index). The fresh environment gets the wheel
with ``--no-index --no-deps`` and reaches its dependencies through a ``.pth`` line naming this
environment's site-packages: nothing is downloaded for it, and only a ``.pth`` *line* is added,
so this environment's editable install of AwaitHuman stays out of the way (its finder is
registered by a ``.pth`` file that Python reads only in real site folders). The test checks that
the code that answers is the installed copy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import httpx

from tests.live import ROOT, free_port


def run(*argv: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=300, **kwargs
    )
    assert result.returncode == 0, f"{argv}:\n{result.stdout}\n{result.stderr}"
    return result


def fresh_environment_with_the_wheel(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--wheel", "--outdir", dist, ROOT)
    (wheel,) = dist.glob("awaithuman-*.whl")
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(
        sys.executable, "-m", "pip", "--python", python, "install", "--no-index", "--no-deps", wheel
    )
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    (Path(site.stdout.strip()) / "awaithuman-test-dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n"
    )
    return venv


def clean_env(**extra: str) -> dict[str, str]:
    dropped = ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV")
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def test_the_built_wheel_serves_create_wait_answer_with_awaithuman_dev(tmp_path: Path) -> None:
    venv = fresh_environment_with_the_wheel(tmp_path)
    workdir = tmp_path / "somewhere-else"
    workdir.mkdir()
    awaithuman = venv / "bin" / "awaithuman"

    where = run(
        venv / "bin" / "python", "-c", "import awaithuman; print(awaithuman.__file__)",
        cwd=workdir, env=clean_env(),
    )  # fmt: skip
    assert where.stdout.startswith(str(venv)), where.stdout
    assert (
        "System check identified no issues"
        in run(awaithuman, "check", cwd=workdir, env=clean_env()).stdout
    )

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "dev.log").open("w+")
    server = subprocess.Popen(
        [str(awaithuman), "dev", "--port", str(port)],
        cwd=workdir, env=clean_env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            output = Path(log.name).read_text()
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, output
            time.sleep(0.2)

        # What make run prints: where to sign in, and the keys.
        assert f"AwaitHuman is running at {base}" in output
        assert "operator@demo.awaithuman.local" in output
        agent_key = re.search(r"Demo agent key \(support-bot\):\s+(\S+)", output)[1]
        operator_key = re.search(r"Operator personal key:\s+(\S+)", output)[1]
        # The state lives where the command was started, not inside the installed package.
        assert (workdir / "db.sqlite3").exists()
        assert (workdir / ".demo-credentials.json").exists()

        # Templates and static files came with the wheel.
        login = httpx.get(f"{base}/account/login/")
        assert login.status_code == 200 and "<form" in login.text
        stylesheet = re.search(r'href="(/static/[^"]+\.css)"', login.text)[1]
        assert httpx.get(f"{base}{stylesheet}").status_code == 200

        # Create, wait, answer.
        agent = {"Authorization": f"Bearer {agent_key}"}
        created = httpx.post(
            f"{base}/api/v1/escalations",
            json={"kind": "approval", "title": "Refund $750 to order #1042"},
            headers=agent,
        )
        assert created.status_code == 201, created.text
        escalation = created.json()["id"]
        waited: dict[str, httpx.Response] = {}
        waiter = threading.Thread(
            target=lambda: waited.setdefault(
                "response",
                httpx.get(
                    f"{base}/api/v1/escalations/{escalation}/wait?timeout=30",
                    headers=agent,
                    timeout=40,
                ),
            )
        )
        waiter.start()
        time.sleep(0.5)
        answered = httpx.post(
            f"{base}/api/v1/escalations/{escalation}/responses",
            json={"outcome": "approve", "comment": "Double charge confirmed."},
            headers={"Authorization": f"Bearer {operator_key}"},
        )
        assert answered.status_code == 201, answered.text
        waiter.join(timeout=35)
        decision = waited["response"].json()
        assert decision["status"] == "approved"
        assert decision["decision"]["comment"] == "Double charge confirmed."
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()
