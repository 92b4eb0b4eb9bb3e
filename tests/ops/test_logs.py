"""Logs: every line names its request, organization and escalation; LOG_FORMAT=json gives one
JSON object per line that a log shipper parses as it is."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from awaithuman.middleware import RequestContextFilter
from tests.live import embedded_stack


class Remember(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(RequestContextFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def django_request_log() -> Iterator[Remember]:
    handler = Remember()
    logger = logging.getLogger("django.request")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_djangos_own_404_line_names_the_request_organization_and_escalation(
    acme, django_request_log
):
    response = acme.agent_client().get(
        "/api/v1/escalations/esc_doesnotexist", HTTP_X_REQUEST_ID="req-from-the-agent-1"
    )
    assert response.status_code == 404
    assert response["X-Request-Id"] == "req-from-the-agent-1"
    (record,) = django_request_log.records
    assert record.getMessage().startswith("Not Found: /api/v1/escalations/esc_doesnotexist")
    assert record.request_id == "req-from-the-agent-1"
    assert record.organization == acme.organization.public_id
    assert record.escalation == "esc_doesnotexist"


def test_the_next_request_does_not_inherit_the_previous_ones_ids(acme, django_request_log):
    acme.agent_client().get("/api/v1/escalations/esc_first", HTTP_X_REQUEST_ID="req-number-one")
    response = acme.agent_client().get("/api/v1/nowhere", HTTP_X_REQUEST_ID="req-number-two")
    assert response.status_code == 404
    second = django_request_log.records[-1]
    assert second.request_id == "req-number-two"
    assert second.escalation == "-"


def _json_lines(log: Path, wanted: str, timeout: float = 10) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        if any(wanted in line for line in lines) or time.monotonic() > deadline:
            return [json.loads(line) for line in lines]
        time.sleep(0.1)


def test_log_format_json_writes_one_parseable_object_per_line_with_the_ids(tmp_path):
    with embedded_stack(tmp_path) as stack:
        stack.env.update(LOG_FORMAT="json", LOG_LEVEL="INFO")
        organization = stack.organization()
        base = stack.serve()
        headers = {"Authorization": f"Bearer {organization['agent_key']}"}
        missing = httpx.get(
            f"{base}/api/v1/escalations/esc_nosuchthing",
            headers={**headers, "X-Request-Id": "req-json-logs-1"},
        )
        assert missing.status_code == 404
        log = next(path for path in stack.logs if path.name.startswith("serve"))
        records = _json_lines(log, "req-json-logs-1")

    # Every line is an object (json.loads above would have raised on any other line).
    assert records
    fields = {"time", "level", "logger", "message", "request_id", "organization", "escalation"}
    assert all({*fields, "trace_id"} <= record.keys() for record in records), records
    (not_found,) = [r for r in records if r.get("request_id") == "req-json-logs-1"]
    assert not_found["logger"] == "django.request"
    assert not_found["level"] == "WARNING"
    assert not_found["message"] == "Not Found: /api/v1/escalations/esc_nosuchthing"
    assert not_found["organization"].startswith("org_")
    assert not_found["escalation"] == "esc_nosuchthing"
    assert not_found["trace_id"] == "-"
    assert not_found["status_code"] == 404
    assert "request" not in not_found
