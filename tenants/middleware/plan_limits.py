"""``PlanLimitExceeded`` raised by a console view (creating an agent, inviting someone) as a 402
page with an upgrade button (problem+json when the client asked for JSON). DRF views render it
as problem+json themselves (``awaithuman.problems.exception_handler``) before this sees it."""

from __future__ import annotations

import json
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from awaithuman.problems import PROBLEM_CONTENT_TYPE, problem_body
from tenants import billing
from tenants.models import Membership


class PlanLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, billing.PlanLimitExceeded):
            return None
        if "html" not in request.headers.get("Accept", "text/html"):
            body = problem_body(
                status_code=402,
                type_slug=exception.type_slug,
                detail=str(exception.detail),
                extra=exception.extra,
            )
            return HttpResponse(json.dumps(body), status=402, content_type=PROBLEM_CONTENT_TYPE)
        return render(
            request,
            "tenants/billing_limit.html",
            {"problem": exception, "is_owner": _is_owner(request)},
            status=402,
        )


def _is_owner(request: HttpRequest) -> bool:
    membership = getattr(request, "membership", None)
    return membership is not None and membership.role == Membership.Role.OWNER
