"""A JSON parser that refuses what would otherwise become a 500 further down.

Refused with a 4xx naming the problem: bodies over ``API_MAX_BODY_BYTES`` (413), invalid UTF-8 or
JSON, ``NaN``/``Infinity`` and numbers too large for a float (PostgreSQL's jsonb cannot store
them), NUL characters and unpaired surrogates such as ``\\ud800`` (jsonb cannot store those, and
neither can be encoded as UTF-8 on the way out) and nesting deeper than
``API_MAX_JSON_DEPTH`` (which would exhaust the recursion limit of every consumer).
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from .problems import ApiProblem


class InvalidJson(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not valid JSON")


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise InvalidJson(f"the number {text[:40]} is out of range")
    return value


def _check_text(text: str, what: str) -> None:
    if "\x00" in text:
        raise InvalidJson(f"{what} must not contain NUL characters (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidJson(f"{what} must not contain lone surrogates (\\ud800-\\udfff)") from None


def check_json_value(value: Any, *, max_depth: int) -> None:
    """Walk a parsed value iteratively: depth bound, no NUL or unpaired surrogate anywhere."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, "strings")
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > max_depth:
            raise InvalidJson(f"JSON nesting deeper than {max_depth} levels is not accepted")
        if isinstance(item, dict):
            for key, child in item.items():
                _check_text(key, "keys")
                stack.append((child, depth + 1))
        else:
            stack.extend((child, depth + 1) for child in item)


def loads_strict(raw: bytes) -> Any:
    """Parse a request body; raise ``InvalidJson`` with a message fit for the caller."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJson("the body is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)
    except RecursionError:
        raise InvalidJson(
            f"JSON nesting deeper than {settings.API_MAX_JSON_DEPTH} levels is not accepted"
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidJson(
            f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError as exc:  # int too long, and InvalidJson from the hooks
        raise InvalidJson(str(exc)) from None
    check_json_value(value, max_depth=settings.API_MAX_JSON_DEPTH)
    return value


def body_too_large(limit: int) -> ApiProblem:
    return ApiProblem(
        status_code=413,
        type_slug="body-too-large",
        detail=f"The request body is larger than the {limit} bytes this API accepts.",
        extra={"limit_bytes": limit},
    )


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.API_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise body_too_large(limit)
        if not raw.strip():
            raise ParseError("The request body is empty; send a JSON object.")
        try:
            return loads_strict(raw)
        except InvalidJson as exc:
            raise ParseError(f"The request body is not acceptable JSON: {exc}.") from None
