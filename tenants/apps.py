from __future__ import annotations

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Organizations and identities"

    def ready(self) -> None:
        from django.contrib.auth.signals import user_logged_out

        from .sessions import on_user_logged_out

        user_logged_out.connect(on_user_logged_out, dispatch_uid="tenants.session_sockets")
