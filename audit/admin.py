"""The audit trail in Django admin: readable, never writable."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only: events are written by ``audit_record`` and the database refuses changes anyway;
    hiding add, change and delete keeps admin from offering what would only fail."""

    list_display = ["seq", "organization_id", "action", "target", "created_at"]
    list_filter = ["action"]
    search_fields = ["target"]
    readonly_fields = [field.name for field in AuditEvent._meta.fields]
    # Counting every row of a long trail on each page load is the slow query; skip it.
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False
