"""The console's tenant resolution: which organization a signed-in person is working in.

``current_membership`` reads it from the session (``organization`` = the organization's public
id), falling back to the person's first membership; ``CurrentOrganizationMiddleware``
(``tenants.middleware.organization``) sets ``request.organization`` and ``request.membership``
from it on every request; ``organization_switch`` changes it. Console views start every query
from ``request.organization`` (another organization's object is then simply not found) and guard
roles with ``role_required``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from .models import Membership

SESSION_KEY = "organization"


def current_membership(request: HttpRequest) -> Membership | None:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    memberships = Membership.objects.select_related("organization", "user").filter(user=user)
    wanted = request.session.get(SESSION_KEY)
    membership = None
    if wanted:
        membership = memberships.filter(organization__public_id=wanted).first()
    return membership or memberships.order_by("created_at", "id").first()


def organization_switch(request: HttpRequest, public_id: str) -> Membership | None:
    """Work in another of my organizations; None if I am not a member of it (or signed out)."""
    if not request.user.is_authenticated:
        return None
    membership = (
        Membership.objects.select_related("organization")
        .filter(user=request.user, organization__public_id=public_id)
        .first()
    )
    if membership is not None:
        request.session[SESSION_KEY] = public_id
    return membership


def role_required(
    *roles: str,
) -> Callable[[Callable[..., HttpResponseBase]], Callable[..., HttpResponseBase]]:
    """Console view guard: signed in, a member of the current organization, in one of ``roles``
    (no roles given: any member)."""

    def decorator(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = getattr(request, "membership", None)
            if membership is None or (roles and membership.role not in roles):
                raise PermissionDenied
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
