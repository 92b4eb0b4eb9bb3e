"""LOG_FORMAT=json: one JSON object per line (python-json-logger), for log shippers."""

from __future__ import annotations

from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

FIELDS = [
    "levelname",
    "name",
    "message",
    "request_id",
    "organization",
    "escalation",
    "trace_id",
]


class JsonFormatter(BaseJsonFormatter):
    """``time``, ``level``, ``logger``, ``message``, the request context of
    ``awaithuman.middleware.RequestContextFilter`` and any ``extra=`` a caller passes.

    Two extras are left out: Uvicorn's ``color_message`` (the message again, with terminal
    colour codes) and ``django.request``'s ``request`` (the request object, whose method and
    path the message already names); its ``status_code`` stays.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            FIELDS,
            rename_fields={"levelname": "level", "name": "logger"},
            # ISO 8601 in UTC.
            timestamp="time",
            reserved_attrs=[*RESERVED_ATTRS, "color_message", "request"],
            **kwargs,
        )
