"""Problems the escalation API raises itself, at the edge: who may call an endpoint at all (an
agent's key, a member's key) and its query's shape. The services raise
``escalations.exceptions`` instead, rendered the same way by ``awaithuman.problems``."""

from __future__ import annotations

from awaithuman.problems import ApiProblem


def conflict(detail: str, *, type_slug: str = "conflict", **extra: object) -> ApiProblem:
    return ApiProblem(status_code=409, type_slug=type_slug, detail=detail, extra=extra or None)


def forbidden(detail: str) -> ApiProblem:
    return ApiProblem(status_code=403, type_slug="forbidden", detail=detail)


def invalid_fields(errors: dict[str, list[str]]) -> ApiProblem:
    return ApiProblem(
        status_code=400,
        type_slug="validation-error",
        detail=f"The request has invalid fields: {', '.join(sorted(errors))}.",
        errors=errors,
    )
