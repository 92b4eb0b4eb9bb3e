"""``make prod``: one command migrates, collects the static files and starts two web processes,
a worker and beat from the Procfile (honcho), sharing their metrics.

What a process's death does to its siblings is tested without honcho (which, like foreman, stops
everything when one process exits): tests/ops/test_production_run.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live import ROOT, free_port, production_stack

pytestmark = pytest.mark.services

TOKEN = "scrape-token-of-make-prod-0123456789"


def running_in_group(group: int) -> list[str]:
    """The live (not zombie) processes of a process group, from ``/proc``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited while we looked
        name, _, rest = text.partition(" (")[2].rpartition(") ")
        state, _, process_group = rest.split()[:3]
        if int(process_group) == group and state != "Z":
            found.append(name)
    return found


def stop(prod: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the whole group, as Ctrl-C in a terminal sends, then wait until every process
    of it has exited: make itself exits at once, while honcho is still stopping the others."""
    try:
        os.killpg(prod.pid, signal.SIGTERM)
    except ProcessLookupError:
        return  # everything had exited already; the log says why
    deadline = time.monotonic() + 30
    while left := running_in_group(prod.pid):
        if time.monotonic() > deadline:
            os.killpg(prod.pid, signal.SIGKILL)
            raise AssertionError(f"still running 30 s after SIGTERM: {left}")
        prod.poll()  # reaps make
        time.sleep(0.1)
    prod.wait()


def ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def created_total(base: str) -> float:
    response = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "awaithuman_escalations_created_total":
                return sample.value
    return 0.0


def test_make_prod_starts_two_web_processes_a_worker_and_beat(tmp_path: Path) -> None:
    with production_stack(tmp_path) as stack:
        org = stack.organization()
        port = free_port(2)  # honcho gives web.2 the next port
        env = {
            **stack.env,
            "PORT": str(port),
            "WEB": "2",
            "METRICS_DIR": str(tmp_path / "metrics"),
            "METRICS_TOKEN": TOKEN,
            "LOG_LEVEL": "INFO",
            "AWAITHUMAN_DATA_DIR": str(tmp_path / "data"),
        }
        (tmp_path / "data").mkdir()
        log = tmp_path / "make-prod.log"
        prod = subprocess.Popen(
            ["make", "--no-print-directory", "prod"],
            cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        web1, web2 = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"
        try:
            deadline = time.monotonic() + 120
            while not (ready(web1) and ready(web2)):
                assert prod.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.3)
            output = log.read_text()
            for process in ("web.1", "web.2", "worker.1", "beat.1"):
                assert f"{process} started" in output, output

            agent = {"Authorization": f"Bearer {org['agent_key']}"}
            created = httpx.post(
                f"{web1}/api/v1/escalations",
                json={"kind": "approval", "title": "Rotate the production database password"},
                headers=agent,
            )
            assert created.status_code == 201, created.text
            read = httpx.get(f"{web2}/api/v1/escalations/{created.json()['id']}", headers=agent)
            assert read.status_code == 200
            # Counted by web 1, scraped from web 2.
            assert created_total(web2) == 1
            # collectstatic ran before the processes started.
            assert (tmp_path / "data" / "staticfiles" / "admin" / "css" / "base.css").exists()
        finally:
            stop(prod)
        assert not ready(web1) and not ready(web2)
