"""Webhooks in Django admin, for platform admins: readable, never writable.

Messages and their attempts are a record of what was sent; endpoints change only through their
services (``webhooks.services``, the console's /org/webhooks/), which audit every change. Signing
secrets are not shown, and agents' secrets not listed at all.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from awaithuman.admin_base import ReadOnlyAdmin

from .models import CallbackEndpoint, WebhookAttempt, WebhookEndpoint, WebhookMessage


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ("public_id", "organization", "url", "disabled_at", "created_at")
    search_fields = ("public_id", "url")
    exclude = ("secret", "previous_secret")


@admin.register(CallbackEndpoint)
class CallbackEndpointAdmin(ReadOnlyAdmin):
    list_display = ("url", "agent", "disabled_at", "created_at")
    search_fields = ("url", "agent__public_id")
    exclude = ()


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    fields = ("number", "attempted_at", "status_code", "duration_ms", "error", "response_body")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(WebhookMessage)
class WebhookMessageAdmin(ReadOnlyAdmin):
    list_display = ("public_id", "kind", "event_type", "url", "status", "created_at")
    list_filter = ("status", "kind", "event_type")
    search_fields = ("public_id", "escalation__public_id", "url")
    exclude = ()
    inlines = [WebhookAttemptInline]
    # Counting every row of a long history on each page load is the slow query; skip it.
    show_full_result_count = False
