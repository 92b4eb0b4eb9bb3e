"""Django admin for tenants. Key digests are never shown; keys are issued by command or console."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import Agent, ApiKey, Membership, Organization


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


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ("name", "organization", "public_id", "created_at")
    list_filter = ("organization",)
    search_fields = ("name", "public_id")
    readonly_fields = ("public_id", "created_at")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
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
        "last_used_at",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A key's plaintext is shown once, when issued: use `createapikey` or the console.
        return False

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("organization", "agent", "membership")
