"""Request id and log context: every log line names the request, organization and escalation.

The context variables are set when a request comes in and deliberately not reset when this
middleware returns: Django logs a 4xx/5xx response (``django.request``) only after the whole
middleware chain has returned, and that line must still name the request. Nothing leaks from one
request into another: under ASGI every request runs in a context of its own, and in a reused
thread the next request sets all three again before it logs anything.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
from collections.abc import Callable
from types import ModuleType

from django.http import HttpRequest, HttpResponse

otel_trace: ModuleType | None
try:  # OpenTelemetry is optional (the [otel] extra); without it log lines carry no trace id.
    from opentelemetry import trace as otel_trace
except ImportError:  # pragma: no cover - depends on the installed extras
    otel_trace = None

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
organization_var: contextvars.ContextVar[str] = contextvars.ContextVar("organization", default="-")
escalation_var: contextvars.ContextVar[str] = contextvars.ContextVar("escalation", default="-")

_INCOMING_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


def new_request_id(incoming: str | None) -> str:
    """Keep a caller's well-formed ``X-Request-Id`` (so traces join up), else make one."""
    if incoming and _INCOMING_ID.match(incoming):
        return incoming
    return "req_" + secrets.token_hex(8)


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = new_request_id(request.headers.get("X-Request-Id"))
        request.request_id = request_id  # type: ignore[attr-defined]
        request_id_var.set(request_id)
        organization_var.set("-")
        escalation_var.set("-")
        response = self.get_response(request)
        response["X-Request-Id"] = request_id
        return response


class RequestContextFilter(logging.Filter):
    """Adds ``request_id``, ``organization``, ``escalation`` and ``trace_id`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.organization = organization_var.get()
        record.escalation = escalation_var.get()
        record.trace_id = current_trace_id()
        return True


def current_trace_id() -> str:
    """The OpenTelemetry trace id of the current span (32 hex digits), or ``-`` without one."""
    if otel_trace is None:
        return "-"
    context = otel_trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else "-"
