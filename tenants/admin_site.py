"""Django admin for two audiences: platform admins (superusers) see every organization; the
owners and admins of an organization see and edit only their own organization's objects.

Org admins are not ``is_staff``: the site lets in anyone who manages an organization, and every
tenant-facing ModelAdmin mixes in ``OrganizationScopedAdmin``, which filters querysets, choices
and permissions by the organizations the person manages. Everything else (organizations, users,
escalations, the audit trail) stays superuser-only through Django's model permissions.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.db.models import Model, QuerySet
from django.http import HttpRequest

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


class OrgAdminAuthenticationForm(AdminAuthenticationForm):
    def confirm_login_allowed(self, user: Any) -> None:
        manages = Membership.objects.filter(user=user, role__in=Membership.MANAGING_ROLES)
        if user.is_active and not user.is_staff and manages.exists():
            return
        super().confirm_login_allowed(user)


class AwaitHumanAdminSite(admin.AdminSite):
    site_header = "AwaitHuman administration"
    site_title = "AwaitHuman admin"
    login_form = OrgAdminAuthenticationForm

    def has_permission(self, request: HttpRequest) -> bool:
        """Platform staff or an organization's owner/admin, and always past a second factor
        (``OTPMiddleware``'s ``is_verified``; ``TwoFactorMiddleware`` leads there)."""
        user = request.user
        if not user.is_active:
            return False
        allowed = user.is_staff or managed_organizations(request).exists()
        return allowed and user.is_verified()


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
        initial = super().get_changeform_initial_data(request)
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
    ) -> forms.Field | None:
        if db_field.name == "organization" and self._scoped(request):
            kwargs["queryset"] = managed_organizations(request)
            if managed_organizations(request).count() == 1:
                kwargs["empty_label"] = None
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(
        self, db_field: Any, request: HttpRequest, **kwargs: Any
    ) -> forms.Field | None:
        related = db_field.remote_field.model
        if self._scoped(request) and any(f.name == "organization" for f in related._meta.fields):
            kwargs["queryset"] = related._default_manager.filter(
                organization__in=managed_organizations(request)
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)


def admin_actor(request: HttpRequest, organization: Organization) -> dict[str, Any]:
    """Who did it, for the audit trail: the member's identity, or the platform admin's."""
    membership = (
        Membership.objects.select_related("user")
        .filter(organization=organization, user=request.user)
        .first()
    )
    if membership is not None:
        return {**membership.as_actor(), "via": "admin"}
    return {"type": "platform_admin", "email": request.user.email, "via": "admin"}


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
    ) -> forms.Field | None:
        related = db_field.remote_field.model
        if not request.user.is_superuser and any(
            f.name == "organization" for f in related._meta.fields
        ):
            kwargs["queryset"] = related._default_manager.filter(
                organization__in=managed_organizations(request)
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)
