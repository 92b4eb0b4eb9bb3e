"""The console's overview page: the organization's escalation figures at a glance.

It lives with escalations (whose numbers it shows) rather than in ``tenants.views``, so the
tenants app keeps depending only downward.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from tenants.console import role_required
from tenants.models import Membership
from tenants.requests import OrganizationRequest

from .outbox import outbox_parked
from .selectors import organization_overview


@role_required()
@require_GET
def overview(request: OrganizationRequest) -> HttpResponse:
    organization = request.organization
    figures = organization_overview(organization=organization)
    managing = request.membership.role in Membership.MANAGING_ROLES
    parked = outbox_parked(organization_id=organization.pk).count() if managing else 0
    return render(
        request,
        "tenants/overview.html",
        {"overview": figures, "nav_active": "overview", "parked_effects": parked},
    )
