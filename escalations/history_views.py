"""The console's History: every escalation of the organization, filtered by a GET form (so a
view is a URL to share), a keyset page at a time, and downloadable as CSV or JSON Lines.

Thin over ``escalations.history``; bad input is a form error (400), never a 500.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from tenants.console import role_required
from tenants.models import Membership
from tenants.requests import OrganizationRequest

from . import history
from .models import Escalation, Policy
from .streaming import streaming_response


def _decided_by_label(decided_by: Any) -> str:
    """Who decided, in a word or an address: a member's e-mail, a policy's name, "deadline"."""
    if not isinstance(decided_by, dict):
        return ""
    kind = decided_by.get("type")
    if kind == "policy":
        return f"policy “{decided_by.get('name', '?')}”"
    if kind == "timeout":
        return "deadline"
    return str(decided_by.get("email") or decided_by.get("name") or kind or "")


def _choices(request: OrganizationRequest) -> dict[str, Any]:
    organization = request.organization
    return {
        "statuses": Escalation.Status.choices,
        "kinds": Escalation.Kind.choices,
        "priorities": Escalation.Priority.choices,
        "channels": history.CHANNELS,
        "agents": organization.agents.order_by("name").values_list("public_id", "name"),
        "policies": Policy.objects.filter(organization=organization)
        .order_by("name")
        .values_list("public_id", "name"),
        "members": Membership.objects.filter(organization=organization)
        .order_by("user__email")
        .values_list("public_id", "user__email"),
    }


@require_GET
@role_required()
def history_list(request: OrganizationRequest) -> HttpResponse:
    values = request.GET.dict()
    errors: dict[str, list[str]] = {}
    rows: list[dict[str, Any]] = []
    page = None
    try:
        filters = history.HistoryFilters.parse(values, extra=("cursor",), blank_is_absent=True)
        escalations = history.history_queryset(request.organization, filters)
        page = history.history_page(
            escalations.select_related("agent"), cursor=values.get("cursor") or None
        )
    except history.HistoryError as exc:
        errors = exc.errors
    query = {
        name: value for name, value in values.items() if name in history.FILTERS and value.strip()
    }
    if page is not None:
        detail = reverse("queue:escalation", args=["ESCALATION_ID"])
        rows = [
            {
                "escalation": escalation,
                "href": detail.replace("ESCALATION_ID", escalation.public_id),
                "policy": (escalation.policy_snapshot or {}).get("name", ""),
                "action": (escalation.action or {}).get("name", "")
                if isinstance(escalation.action, dict)
                else "",
                "decided_by": _decided_by_label(escalation.decided_by),
            }
            for escalation in page.escalations
        ]
    context = {
        **_choices(request),
        "rows": rows,
        "errors": errors,
        "values": query,
        "filtered": bool(query),
        "query": urlencode(query),
        "next": page and page.next_cursor and urlencode({**query, "cursor": page.next_cursor}),
        "previous": page
        and page.previous_cursor
        and urlencode({**query, "cursor": page.previous_cursor}),
    }
    return render(request, "escalations/history.html", context, status=400 if errors else 200)


@require_GET
@role_required()
def history_export(request: OrganizationRequest) -> HttpResponse | StreamingHttpResponse:
    values = request.GET.dict()
    export_format = values.get("format", "")
    try:
        filters = history.HistoryFilters.parse(values, extra=("format",), blank_is_absent=True)
        if export_format not in history.EXPORT_FORMATS:
            raise history.HistoryError(
                {"format": [f"Must be one of: {', '.join(history.EXPORT_FORMATS)}."]}
            )
    except history.HistoryError as exc:
        return HttpResponse(str(exc), status=400, content_type="text/plain; charset=utf-8")
    lines = history.export_lines(
        history.history_queryset(request.organization, filters), export_format
    )
    return streaming_response(
        request,
        lines,
        content_type=history.EXPORT_FORMATS[export_format],
        filename=f"{request.organization.slug}-escalations.{export_format}",
    )
