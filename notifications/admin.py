"""Notifications in Django admin, for platform admins: readable, never writable.

Deliveries and answer codes are a record of what was sent; contact points and preferences change
only through their services (``notifications.contact_points``), which verify addresses and audit
every change — an admin form would do neither. Secrets (verification digests, answer tokens) are
not shown.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest

from .models import ChannelAnswerCode, ContactPoint, Delivery, NotificationPreference


class ReadOnlyAdmin(admin.ModelAdmin):
    """Every shown field read-only; add, change and delete refused (the view stays)."""

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        exclude = self.exclude or ()
        return [field.name for field in self.model._meta.fields if field.name not in exclude]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


@admin.register(ContactPoint)
class ContactPointAdmin(ReadOnlyAdmin):
    list_display = ("public_id", "membership", "channel", "address", "position", "verified_at")
    list_filter = ("channel",)
    search_fields = ("public_id", "address", "membership__public_id", "membership__user__email")
    exclude = ("verification_digest",)


@admin.register(NotificationPreference)
class NotificationPreferenceAdmin(ReadOnlyAdmin):
    list_display = ("membership", "quiet_start", "quiet_end", "time_zone")
    search_fields = ("membership__public_id", "membership__user__email")
    exclude = ()


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = ("public_id", "escalation", "membership", "channel", "kind", "status")
    list_filter = ("status", "channel", "kind")
    search_fields = ("public_id", "escalation__public_id", "provider_id")
    exclude = ()
    # Counting every row of a long history on each page load is the slow query; skip it.
    show_full_result_count = False


@admin.register(ChannelAnswerCode)
class ChannelAnswerCodeAdmin(ReadOnlyAdmin):
    list_display = ("escalation", "membership", "created_at", "used_at")
    search_fields = ("escalation__public_id", "membership__public_id")
    exclude = ("code", "token")
