"""Django admin for tenants. Org owners and admins manage their own teams, agents and keys here;
key digests are never shown and keys are issued by command or console (shown once)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from audit.services import audit_record

from .admin_site import OrganizationScopedAdmin, admin_actor
from .models import Agent, ApiKey, Membership, Organization, Team
from .services import api_key_revoke


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    fields = ("user", "role", "created_at")
    readonly_fields = ("created_at",)
    raw_id_fields = ("user",)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "public_id", "plan", "require_2fa", "created_at")
    search_fields = ("name", "slug", "public_id")
    readonly_fields = ("public_id", "created_at", "stripe_customer_id", "stripe_subscription_id")
    inlines = [MembershipInline]


class TeamForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ("organization", "name", "members")

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        organization = cleaned.get("organization")
        foreign = [
            m
            for m in cleaned.get("members") or []
            if m.organization_id != getattr(organization, "pk", None)
        ]
        if organization is not None and foreign:
            raise forms.ValidationError(
                {"members": "Every member must belong to the team's organization."}
            )
        return cleaned


@admin.register(Team)
class TeamAdmin(OrganizationScopedAdmin):
    form = TeamForm
    list_display = ("name", "organization", "public_id")
    list_filter = ("organization",)
    search_fields = ("name", "public_id")
    filter_horizontal = ("members",)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        team = form.instance
        audit_record(
            organization_id=team.organization_id,
            action="team.updated" if change else "team.created",
            actor=admin_actor(request, team.organization),
            target=team.public_id,
            data={"name": team.name, "members": [m.public_id for m in team.members.all()]},
        )


@admin.register(Agent)
class AgentAdmin(OrganizationScopedAdmin):
    list_display = ("name", "organization", "public_id", "created_at")
    list_filter = ("organization",)
    search_fields = ("name", "public_id")
    readonly_fields = ("public_id", "created_at")

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        audit_record(
            organization_id=obj.organization_id,
            action="agent.updated" if change else "agent.created",
            actor=admin_actor(request, obj.organization),
            target=obj.public_id,
            data={"name": obj.name, "changed": form.changed_data},
        )


@admin.register(ApiKey)
class ApiKeyAdmin(OrganizationScopedAdmin):
    list_display = (
        "__str__",
        "organization",
        "agent",
        "membership",
        "mode",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = ("mode", "organization")
    search_fields = ("key_id",)
    fields = (
        "key_id",
        "organization",
        "agent",
        "membership",
        "name",
        "mode",
        "scopes",
        "rate_limit",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    readonly_fields = (
        "key_id",
        "organization",
        "agent",
        "membership",
        "mode",
        "scopes",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        # A key's plaintext is shown once, when issued: use `createapikey` or the console.
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[ApiKey]:
        return super().get_queryset(request).select_related("organization", "agent", "membership")

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        audit_record(
            organization_id=obj.organization_id,
            action="api_key.updated",
            actor=admin_actor(request, obj.organization),
            target=obj.key_id,
            data={"name": obj.name, "rate_limit": obj.rate_limit},
        )

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = 0
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key, actor=admin_actor(request, api_key.organization))
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
