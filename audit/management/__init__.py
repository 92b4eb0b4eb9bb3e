"""Shared by the audit management commands."""

from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.core.management.base import CommandError


def organization_id_from_slug(slug: str) -> int:
    """The primary key of the organization with this slug, or a ``CommandError`` naming it.

    The organization model is ``settings.AUDIT_ORGANIZATION_MODEL``: ``audit`` imports no app of
    ours, the way ``django.contrib.auth`` reaches the user model through ``AUTH_USER_MODEL``.
    """
    organization_model = apps.get_model(settings.AUDIT_ORGANIZATION_MODEL)
    try:
        return organization_model._default_manager.values_list("pk", flat=True).get(slug=slug)
    except organization_model.DoesNotExist:
        raise CommandError(f"no organization with slug {slug!r}") from None
