from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class AwaitHumanAdminConfig(AdminConfig):
    """Django admin on our site class, which also admits organization owners and admins."""

    default_site = "tenants.admin_site.AwaitHumanAdminSite"
