"""Request id and log context: every log line names the request, organization and escalation."""

from __future__ import annotations

import contextvars
import logging
import re
import secrets
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

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
        tokens = (
            request_id_var.set(request_id),
            organization_var.set("-"),
            escalation_var.set("-"),
        )
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(tokens[0])
            organization_var.reset(tokens[1])
            escalation_var.reset(tokens[2])
        response["X-Request-Id"] = request_id
        return response


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.organization = organization_var.get()
        record.escalation = escalation_var.get()
        return True
