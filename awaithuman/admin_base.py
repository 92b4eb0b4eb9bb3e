"""Admin base classes shared by the apps."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model
from django.http import HttpRequest


class ReadOnlyAdmin(admin.ModelAdmin):
    """Every shown field read-only; add, change and delete refused (the view stays). Fields in
    ``exclude`` (secrets) are not shown at all."""

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        exclude = self.exclude or ()
        return [field.name for field in self.model._meta.fields if field.name not in exclude]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
