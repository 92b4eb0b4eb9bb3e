"""A Celery worker under load survives Redis going away and resumes on its own.

Redis is reached through a TCP proxy that the test takes away (every connection aborted, new
ones refused) and brings back, as a crashed Redis host or a dropped network path looks to the
worker; the worker runs as the README's process list runs it (the prefork pool, without gossip,
mingle and heartbeat).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.live import BIN, need_services, production_stack
from tests.proxy import tcp_proxy

from .conftest import SmtpServer
from .test_live import OPERATOR, REQUEST

pytestmark = pytest.mark.services

# The README's worker command line.
WORKER_FLAGS = ("--without-gossip", "--without-mingle", "--without-heartbeat")


def test_a_loaded_worker_survives_redis_going_away_and_delivers_everything(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    redis_url = urlsplit(need_services()[1])
    with tcp_proxy(redis_url.port or 6379) as proxy:
        proxied = redis_url._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        with production_stack(tmp_path, redis_url=proxied) as stack:
            stack.use_smtp(
                smtp_server.host,
                smtp_server.port,
                NOTIFICATION_SWEEP_SECONDS="1",
                NOTIFICATION_LOST_TASK_SECONDS="5",
            )
            org = stack.organization()
            base = stack.daphne()
            celery = str(BIN / "celery")
            worker = stack.start(
                "worker", celery, "-A", "awaithuman", "worker", "--loglevel", "INFO",
                "--concurrency", "2", *WORKER_FLAGS,
            )  # fmt: skip
            stack.beat()
            stack._wait_for_log("worker.log", " ready.")
            created: list[str] = []
            stop = threading.Event()

            def load() -> None:
                with httpx.Client(timeout=10) as client:
                    while not stop.is_set():
                        response = client.post(
                            f"{base}/api/v1/escalations",
                            json={**REQUEST, "title": f"Refund #{len(created)}"},
                            headers={"Authorization": f"Bearer {org['agent_key']}"},
                        )
                        if response.status_code == 201:
                            created.append(response.json()["id"])

            loaders = [threading.Thread(target=load) for _ in range(4)]
            for loader in loaders:
                loader.start()
            try:
                for outage in (2, 8):
                    time.sleep(3)
                    proxy.stop()
                    time.sleep(outage)
                    proxy.start()
                time.sleep(3)
            finally:
                stop.set()
                for loader in loaders:
                    loader.join()
            assert worker.poll() is None, stack.output()

            def all_sent() -> bool:
                return len(smtp_server.inbox.to(OPERATOR)) >= len(created)

            stack.until(all_sent, 120, f"all {len(created)} e-mails")
            assert worker.poll() is None, stack.output()
            assert "Unrecoverable error" not in (tmp_path / "worker.log").read_text()
