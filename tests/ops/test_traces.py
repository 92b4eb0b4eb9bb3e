"""Traces across processes: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, a web process and a worker
export their spans over OTLP/HTTP (here to a fake collector on 127.0.0.1, which decodes them with
the OpenTelemetry protobuf definitions).

The agent's create arrives with a W3C ``traceparent``; the notification the worker sends for it
belongs to that trace (carried by the outbox row, then by Celery's task headers). The operator's
answer starts a trace of its own; the callback the worker POSTs for the decision belongs to it,
and its ``traceparent`` header hands it on to the agent.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.live import BIN, Stack, production_stack
from tests.notifications.conftest import SmtpServer
from tests.notifications.fake_receiver import Receiver, running_receiver

pytestmark = pytest.mark.services


class Collector:
    """Spans received, as (service name, trace id in hex, span name)."""

    def __init__(self) -> None:
        self.spans = COLLECTED
        self.spans.clear()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource_spans in request.resource_spans:
                    service = next(
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    )
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            collector.spans.append((service, span.trace_id.hex(), span.name))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def services_in(self, trace_id: str) -> set[str]:
        return {service for service, trace, _ in self.spans if trace == trace_id}


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector()
    thread = threading.Thread(target=collector.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield collector
    finally:
        collector.server.shutdown()
        collector.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


COLLECTED: list[tuple[str, str, str]] = []


def until(condition: Any, what: str, stack: Stack, timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s:\n{stack.output()}\n{COLLECTED}")


def test_create_notification_decision_and_callback_are_one_trace(
    tmp_path: Path, smtp_server: SmtpServer, receiver: Receiver, collector: Collector
) -> None:
    with production_stack(tmp_path) as stack:
        stack.env.update(
            EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
            EMAIL_HOST=smtp_server.host,
            EMAIL_PORT=str(smtp_server.port),
            OUTBOUND_ALLOW_PRIVATE="1",
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.url,
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        org = stack.organization()
        stack.env["OTEL_SERVICE_NAME"] = "awaithuman-web"
        web = stack.serve()
        stack.env["OTEL_SERVICE_NAME"] = "awaithuman-worker"
        python = str(BIN / "python")
        stack.start("worker", python, "-m", "awaithuman", "worker")
        stack._wait_for_log("worker.log", " ready.")
        stack.start("beat", python, "-m", "awaithuman", "beat", "--schedule", str(tmp_path / "s"))

        create_trace = secrets.token_hex(16)
        created = httpx.post(
            f"{web}/api/v1/escalations",
            json={"kind": "approval", "title": "Refund order #1042", "callback_url": receiver.url},
            headers={
                "Authorization": f"Bearer {org['agent_key']}",
                "traceparent": f"00-{create_trace}-{secrets.token_hex(8)}-01",
            },
        )
        assert created.status_code == 201, created.text
        until(lambda: smtp_server.inbox.messages, "the e-mail", stack)
        # The create's trace: the request in the web process, the sending in the worker.
        until(
            lambda: collector.services_in(create_trace) == {"awaithuman-web", "awaithuman-worker"},
            "the create's trace in both processes",
            stack,
        )
        worker_spans = {
            name
            for service, trace, name in collector.spans
            if trace == create_trace and service == "awaithuman-worker"
        }
        assert any(name.startswith("outbox ") for name in worker_spans), worker_spans
        assert any("notifications" in name for name in worker_spans), worker_spans

        answered = httpx.post(
            f"{web}/api/v1/escalations/{created.json()['id']}/responses",
            json={"outcome": "approve"},
            headers={"Authorization": f"Bearer {org['operator_key']}"},
        )
        assert answered.status_code == 201, answered.text
        (callback,) = until(lambda: receiver.requests, "the callback", stack)
        # The answer continues the create's trace: one trace from create to callback.
        assert callback.headers["traceparent"].split("-")[1] == create_trace
        until(
            lambda: any(
                service == "awaithuman-web" and name == "escalation answered"
                for service, trace, name in collector.spans
                if trace == create_trace
            ),
            "the answer's span in the create's trace",
            stack,
        )
        worker_spans = {
            name
            for service, trace, name in collector.spans
            if trace == create_trace and service == "awaithuman-worker"
        }
        assert "outbox notifications.callbacks" in worker_spans, worker_spans
