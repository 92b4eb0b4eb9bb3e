"""RFC 9457 problem details for every error the API returns.

One renderer for DRF exceptions and the domain's refusals (``exception_handler``), for the ASGI
wait consumer (``problem_body``) and for Django-level 404/500 under ``/api/``
(``problem_response``), so an agent always gets the same shape: ``type``, ``title``, ``status``,
``detail`` and, where input was bad, ``errors`` mapping each field to its messages.

A database that cannot be reached (or a pool with no connection to give within its timeout) is
not a bug in the request: ``handler500`` answers it with 503 and ``Retry-After``, for the API as
problem+json, so clients retry (with their idempotency key) instead of giving up.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response

from escalations.exceptions import Conflict, EscalationError, InvalidInput, NotAllowed

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://awaithuman.dev/problems/"

_TITLES = {
    400: "Invalid request",
    401: "Authentication required",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Unprocessable request",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}
# Seconds a client should wait before retrying while the database is away.
DATABASE_RETRY_AFTER_SECONDS = 5


class ApiProblem(exceptions.APIException):
    """An API error with a stable problem ``type`` slug, a status and optional field errors."""

    def __init__(
        self,
        *,
        status_code: int,
        type_slug: str,
        detail: str,
        errors: dict[str, list[str]] | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail=detail)
        self.status_code = status_code
        self.type_slug = type_slug
        self.errors = errors
        self.extra = extra or {}
        self.headers = headers or {}


# The domain's refusals carry no HTTP; this is their status, for the API and the console alike.
_REFUSAL_STATUS: tuple[tuple[type[EscalationError], int], ...] = (
    (InvalidInput, 400),
    (NotAllowed, 403),
    (Conflict, 409),
    (EscalationError, 400),
)


def refusal_status(refusal: EscalationError) -> int:
    return next(code for kind, code in _REFUSAL_STATUS if isinstance(refusal, kind))


def refusal_problem(refusal: EscalationError) -> ApiProblem:
    return ApiProblem(
        status_code=refusal_status(refusal),
        type_slug=refusal.code,
        detail=refusal.detail,
        errors=refusal.errors,
        extra=refusal.extra,
    )


def problem_body(
    *,
    status_code: int,
    type_slug: str,
    detail: str,
    errors: dict[str, list[str]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + type_slug,
        "title": _TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return body


def problem_response(
    *, status_code: int, type_slug: str, detail: str, headers: dict[str, str] | None = None
) -> HttpResponse:
    """A plain Django response carrying a problem document (outside DRF's views)."""
    body = problem_body(status_code=status_code, type_slug=type_slug, detail=detail)
    response = HttpResponse(json.dumps(body), status=status_code, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def _flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested ``ValidationError.detail`` → ``{"action.arguments": ["…"]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else str(key)
            path = f"{prefix}.{name}" if prefix and name else (prefix or name)
            for field, messages in _flatten_errors(value, path).items():
                flat.setdefault(field, []).extend(messages)
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            flat.setdefault(prefix or "body", []).extend(str(item) for item in detail)
        else:
            for index, item in enumerate(detail):
                path = f"{prefix}[{index}]" if prefix else f"[{index}]"
                for field, messages in _flatten_errors(item, path).items():
                    flat.setdefault(field, []).extend(messages)
    else:
        flat.setdefault(prefix or "body", []).append(str(detail))
    return flat


def _slug_for(exc: exceptions.APIException) -> str:
    return {
        exceptions.ValidationError: "validation-error",
        exceptions.ParseError: "malformed-request",
        exceptions.AuthenticationFailed: "unauthenticated",
        exceptions.NotAuthenticated: "unauthenticated",
        exceptions.PermissionDenied: "forbidden",
        exceptions.NotFound: "not-found",
        exceptions.MethodNotAllowed: "method-not-allowed",
        exceptions.NotAcceptable: "not-acceptable",
        exceptions.UnsupportedMediaType: "unsupported-media-type",
        exceptions.Throttled: "rate-limited",
    }.get(type(exc), "error")


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF ``EXCEPTION_HANDLER``: every error becomes ``application/problem+json``."""
    if isinstance(exc, EscalationError):
        exc = refusal_problem(exc)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None

    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header  # type: ignore[attr-defined]
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(int(exc.wait))  # type: ignore[attr-defined]

    if isinstance(exc, ApiProblem):
        body = problem_body(
            status_code=exc.status_code,
            type_slug=exc.type_slug,
            detail=str(exc.detail),
            errors=exc.errors,
            extra=exc.extra,
        )
        headers.update(exc.headers)
    elif isinstance(exc, exceptions.ValidationError):
        errors = _flatten_errors(exc.detail)
        fields = ", ".join(sorted(errors))
        body = problem_body(
            status_code=status.HTTP_400_BAD_REQUEST,
            type_slug="validation-error",
            detail=f"The request has invalid fields: {fields}.",
            errors=errors,
        )
    else:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if isinstance(exc, exceptions.UnsupportedMediaType):
            # curl -d without a header sends a form; say what to send instead.
            detail += " Send a JSON body with the header 'Content-Type: application/json'."
        body = problem_body(status_code=exc.status_code, type_slug=_slug_for(exc), detail=detail)

    response = Response(body, status=body["status"], headers=headers)
    response.content_type = PROBLEM_CONTENT_TYPE
    return response


def not_found_view(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """``handler404``: problem+json under ``/api/``, Django's page elsewhere."""
    if not request.path.startswith("/api/"):
        return defaults.page_not_found(request, exception or Http404())
    return problem_response(
        status_code=404, type_slug="not-found", detail="No such resource at this address."
    )


def _database_unavailable(request: HttpRequest) -> HttpResponse:
    headers = {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)}
    detail = "The database is unavailable for a moment; retry after the Retry-After delay."
    if request.path.startswith("/api/"):
        return problem_response(
            status_code=503, type_slug="unavailable", detail=detail, headers=headers
        )
    response = HttpResponse(detail, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = headers["Retry-After"]
    return response


def server_error_view(request: HttpRequest) -> HttpResponse:
    """``handler500``: problem+json under ``/api/``, Django's page elsewhere; 503 with
    Retry-After when the error is the database being unreachable (Django calls this inside
    its ``except`` block, so the exception at hand is the one being handled)."""
    if isinstance(sys.exc_info()[1], OperationalError | InterfaceError):
        return _database_unavailable(request)
    if not request.path.startswith("/api/"):
        return defaults.server_error(request)
    return problem_response(
        status_code=500,
        type_slug="internal-error",
        detail="Something went wrong on our side; it has been logged with the request id.",
    )
