from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from .models import Escalation, Response


class ResponseInline(admin.TabularInline):
    model = Response
    extra = 0
    can_delete = False
    fields = ("membership", "outcome", "payload", "comment", "channel", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Escalation)
class EscalationAdmin(admin.ModelAdmin):
    """Read-only: escalations change state only through the API and console, which audit it."""

    list_display = (
        "public_id",
        "title",
        "organization",
        "agent",
        "kind",
        "status",
        "priority",
        "created_at",
    )
    list_filter = ("status", "kind", "priority", "organization")
    search_fields = ("public_id", "title", "external_id")
    inlines = [ResponseInline]

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [field.name for field in Escalation._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
