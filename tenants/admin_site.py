"""Django admin for two audiences: platform admins (superusers) see every organization; the
owners and admins of an organization see and edit only their own organization's objects.

Org admins are not ``is_staff``: the site lets in anyone who manages an organization, and every
tenant-facing ModelAdmin mixes in ``OrganizationScopedAdmin``, which filters querysets, choices
and permissions by the organizations the person manages. Everything else (organizations, users,
escalations, the audit trail) stays superuser-only through Django's model permissions.

The admin has no sign-in form of its own: ``/admin/login/`` sends people to the console's
sign-in (django-allauth, with its failed-login throttle and lockout, then the second factor), so
there is one way in with one set of limits, and nothing to brute-force beside it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import REDIRECT_FIELD_NAME
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from .models import Membership, Organization


def managed_organizations(request: HttpRequest) -> QuerySet[Organization]:
    """The organizations this person may administer (cached on the request)."""
    cached = getattr(request, "_managed_organizations", None)
    if cached is None:
        user = request.user
        if not user.is_authenticated or not user.is_active:
            cached = Organization.objects.none()
        else:
            cached = Organization.objects.filter(
                memberships__user=user, memberships__role__in=Membership.MANAGING_ROLES
            ).distinct()
        request._managed_organizations = cached  # type: ignore[attr-defined]
    return cached


class AwaitHumanAdminSite(admin.AdminSite):
    site_header = "AwaitHuman administration"
    site_title = "AwaitHuman admin"

    def has_permission(self, request: HttpRequest) -> bool:
        """Platform staff or an organization's owner/admin, and always past a second factor
        (``OTPMiddleware``'s ``is_verified``; ``TwoFactorMiddleware`` leads there)."""
        user: Any = request.user  # as OTPMiddleware wraps it, with is_verified()
        if not user.is_active:
            return False
        allowed = user.is_staff or managed_organizations(request).exists()
        return allowed and user.is_verified()

    def login(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """Never checks a password here: a visitor goes to the console's sign-in and comes back
        to ``next``; a signed-in person the admin refuses gets 403 (``TwoFactorMiddleware`` has
        already sent anyone who owes a second factor to that step)."""
        next_url = request.GET.get(REDIRECT_FIELD_NAME, "")
        if not url_has_allowed_host_and_scheme(
            next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            next_url = ""
        next_url = next_url or reverse("admin:index", current_app=self.name)
        if not request.user.is_authenticated:
            login_url = resolve_url(settings.LOGIN_URL)
            return HttpResponseRedirect(f"{login_url}?{urlencode({REDIRECT_FIELD_NAME: next_url})}")
        if not self.has_permission(request):
            raise PermissionDenied
        return HttpResponseRedirect(next_url)


class OrganizationListFilter(admin.RelatedFieldListFilter):
    """ "By organization", offering an org admin only the organizations they manage (Django's own
    filter lists every row of the related table)."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> list[Any]:
        if request.user.is_superuser:
            return super().field_choices(field, request, model_admin)
        return [(org.pk, str(org)) for org in managed_organizations(request).order_by("name")]


class OrganizationScopedAdmin(admin.ModelAdmin):
    """A ModelAdmin whose rows belong to an organization (``organization_path`` leads to it)."""

    organization_path = "organization"

    def get_list_filter(self, request: HttpRequest) -> Any:
        return [
            (name, OrganizationListFilter) if name == self.organization_path else name
            for name in super().get_list_filter(request)
        ]

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """A new row belongs to the organization its author manages, when there is just one."""
        initial: dict[str, Any] = super().get_changeform_initial_data(request)
        managed = list(managed_organizations(request)[:2])
        if self._scoped(request) and len(managed) == 1 and self.organization_path == "organization":
            initial.setdefault("organization", managed[0].pk)
        return initial

    def _scoped(self, request: HttpRequest) -> bool:
        return not request.user.is_superuser

    def _organization_of(self, obj: Model) -> Organization:
        target: Any = obj
        for part in self.organization_path.split("__"):
            target = getattr(target, part)
        return target

    def _manages(self, request: HttpRequest, obj: Model | None) -> bool:
        managed = managed_organizations(request)
        if obj is None:
            return managed.exists()
        return managed.filter(pk=self._organization_of(obj).pk).exists()

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if self._scoped(request):
            queryset = queryset.filter(
                **{f"{self.organization_path}__in": managed_organizations(request)}
            )
        return queryset

    def has_module_permission(self, request: HttpRequest) -> bool:
        return super().has_module_permission(request) or self._manages(request, None)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return super().has_view_permission(request, obj) or self._manages(request, obj)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return super().has_add_permission(request, *args) or self._manages(request, None)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return super().has_change_permission(request, obj) or self._manages(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return super().has_delete_permission(request, obj) or self._manages(request, obj)

    def formfield_for_foreignkey(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.ModelChoiceField | None:
        if db_field.name == "organization" and self._scoped(request):
            kwargs["queryset"] = managed_organizations(request)
            if managed_organizations(request).count() == 1:
                kwargs["empty_label"] = None
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.ModelMultipleChoiceField | None:
        related = db_field.remote_field.model
        if self._scoped(request) and any(f.name == "organization" for f in related._meta.fields):
            kwargs["queryset"] = related._default_manager.filter(
                organization__in=managed_organizations(request)
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)


def admin_actor(request: HttpRequest, organization: Organization | None) -> dict[str, Any]:
    """Who did it, for the audit trail: the member's identity, or the platform admin's (always,
    for an action that spans organizations: ``organization=None``)."""
    user = request.user
    if not user.is_authenticated:  # never: has_permission lets no one signed out in
        raise PermissionDenied
    membership = (
        Membership.objects.select_related("user")
        .filter(organization=organization, user=user)
        .first()
        if organization is not None
        else None
    )
    if membership is not None:
        return {**membership.as_actor(), "via": "admin"}
    return {"type": "platform_admin", "email": user.email, "via": "admin"}


class OrganizationScopedInline(admin.options.InlineModelAdmin):
    """Inline rows of a scoped parent: allowed wherever the parent is, choices limited alike."""

    def _parent_allows(self, request: HttpRequest) -> bool:
        return request.user.is_superuser or managed_organizations(request).exists()

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._parent_allows(request)

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._parent_allows(request)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._parent_allows(request)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._parent_allows(request)

    def formfield_for_manytomany(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.ModelMultipleChoiceField | None:
        related = db_field.remote_field.model
        if not request.user.is_superuser and any(
            f.name == "organization" for f in related._meta.fields
        ):
            kwargs["queryset"] = related._default_manager.filter(
                organization__in=managed_organizations(request)
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)
