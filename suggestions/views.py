"""``/org/suggestions/``: the policy rules people already follow, for owners and admins.

The page mines on every view (``suggestions.mining``; a few aggregate queries over the window).
Drafting and dismissing re-mine and act on the suggestion the data gives now, found by its
fingerprint: a posted condition is never trusted, and a fingerprint the organization's own data
does not give is a 404. Operators and viewers get 403, like every managing page
(``role_required``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from tenants.console import role_required
from tenants.models import Membership
from tenants.requests import OrganizationRequest

from . import services
from .mining import MiningOptions, Suggestion, mine, suggestion_find

MANAGERS = tuple(Membership.MANAGING_ROLES)
DAYS_CHOICES = (7, 30, 90, 180)
_FINGERPRINT = re.compile(r"[0-9a-f]{64}")


class OptionsForm(forms.Form):
    """The miner's knobs, from the query string (or the posted form of a draft or dismissal)."""

    days = forms.IntegerField(min_value=1, max_value=365, initial=30, required=False)
    support = forms.IntegerField(min_value=1, max_value=100_000, initial=10, required=False)
    confidence = forms.IntegerField(
        min_value=50, max_value=100, initial=100, required=False, help_text="percent"
    )

    def options(self) -> MiningOptions:
        data = self.cleaned_data
        defaults = MiningOptions()
        return MiningOptions(
            days=data.get("days") or defaults.days,
            min_support=data.get("support") or defaults.min_support,
            min_confidence=(data.get("confidence") or 100) / 100,
        )

    def query(self) -> str:
        options = self.options()
        return urlencode(
            {
                "days": options.days,
                "support": options.min_support,
                "confidence": round(options.min_confidence * 100),
            }
        )


def _page(request: OrganizationRequest, form: OptionsForm, status: int = 200) -> HttpResponse:
    """The page; with invalid options (status 400) their errors and no mining."""
    valid = form.is_valid()
    options = form.options() if valid else MiningOptions()
    context: dict[str, Any] = {
        "form": form,
        "options": options,
        "suggestions": mine(organization=request.organization, options=options) if valid else [],
        "days_choices": sorted({*DAYS_CHOICES, options.days}),
        "nav_active": "overview",
    }
    return render(request, "suggestions/suggestions.html", context, status=status)


@role_required(*MANAGERS)
@require_GET
def suggestions(request: OrganizationRequest) -> HttpResponse:
    form = OptionsForm(request.GET)
    return _page(request, form, status=200 if form.is_valid() else 400)


def _posted(
    request: OrganizationRequest, fingerprint: str
) -> tuple[OptionsForm, Suggestion | None]:
    """The posted options, and the suggestion they give now (None if they are invalid).

    A fingerprint the organization's own data does not give (another organization's, one the
    data moved since the page was shown, or no fingerprint at all) is a 404.
    """
    if not _FINGERPRINT.fullmatch(fingerprint):
        raise Http404("No such suggestion.")
    form = OptionsForm(request.POST)
    if not form.is_valid():
        return form, None
    found = suggestion_find(
        organization=request.organization, options=form.options(), fingerprint=fingerprint
    )
    if found is None:
        raise Http404("That suggestion no longer holds: the decisions changed.")
    return form, found


@role_required(*MANAGERS)
@require_POST
def suggestion_draft(request: OrganizationRequest, fingerprint: str) -> HttpResponse:
    """Create the rule as a disabled policy, then open it in the policy editor for review."""
    form, suggestion = _posted(request, fingerprint)
    if suggestion is None:
        return _page(request, form, status=400)
    policy = suggestion.existing_policy or services.policy_draft_create(
        organization=request.organization,
        suggestion=suggestion,
        actor=request.membership.as_actor(),
    )
    return HttpResponseRedirect(reverse("admin:escalations_policy_change", args=[policy.pk]))


@role_required(*MANAGERS)
@require_POST
def suggestion_dismiss(request: OrganizationRequest, fingerprint: str) -> HttpResponse:
    form, suggestion = _posted(request, fingerprint)
    if suggestion is None:
        return _page(request, form, status=400)
    services.suggestion_dismiss(
        organization=request.organization,
        suggestion=suggestion,
        actor=request.membership.as_actor(),
    )
    messages.success(request, f"Dismissed: {suggestion.name}. It will not be offered again.")
    return HttpResponseRedirect(f"{reverse('suggestions')}?{form.query()}")
