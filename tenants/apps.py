from __future__ import annotations

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Organizations and identities"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.contrib.auth.signals import user_logged_out
        from django.db.models.signals import post_delete, post_save

        # tasks: registers the Celery tasks (billing queues its e-mails by name).
        from . import keycache, tasks  # noqa: F401
        from .models import Agent, ApiKey, Membership, Organization
        from .sessions import on_user_logged_out

        # Cache invalidation, not domain flow: any save or delete of what an API key's
        # authentication reads (from a service, Django admin or a shell) empties the key cache
        # of every process once it commits.
        for model in (ApiKey, Agent, Membership, Organization, get_user_model()):
            for signal in (post_save, post_delete):
                signal.connect(
                    keycache.invalidate_on_commit,
                    sender=model,
                    dispatch_uid=f"keycache-{model._meta.label}-{signal is post_save}",
                )
        # Signing out closes the session's live-queue websockets in every process.
        user_logged_out.connect(on_user_logged_out, dispatch_uid="tenants.session_sockets")
