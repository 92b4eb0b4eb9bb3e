"""The console's overview page: the organization's escalation figures at a glance.

It lives with escalations (whose numbers it shows) rather than in ``tenants.views``, so the
tenants app keeps depending only downward.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from tenants.console import role_required

from .selectors import organization_overview


@role_required()
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    figures = organization_overview(organization=request.organization)  # type: ignore[attr-defined]
    return render(request, "tenants/overview.html", {"overview": figures, "nav_active": "overview"})
