from __future__ import annotations

from django.apps import AppConfig


class EscalationsConfig(AppConfig):
    name = "escalations"
    verbose_name = "Escalations"

    def ready(self) -> None:
        from audit.checkpoints import register_signer
        from audit.services import on_unsealed_commit
        from tenants import hooks as tenant_hooks

        # tasks: registers the Celery tasks (outbox_nudge queues the dispatch by name).
        from . import checkpoints, history, hooks, live, outbox, services, tasks, wakeups  # noqa: F401

        # New audit events are sealed by the same dispatch that runs the outbox.
        on_unsealed_commit(outbox.nudge_on_commit)
        # Audit checkpoints are signed with the receipt keys.
        register_signer(checkpoints.ReceiptKeyCheckpointSigner())

        # The live queue is a consumer like any other: it learns of events from the outbox.
        hooks.register("live.queue", live.queue_frames, events=live.QUEUE_EVENTS)
        hooks.register("wakeups", wakeups.wake_consumer, events={"decided", "expired", "cancelled"})
        # What tenants announce: a removed member's sockets close, a deleted organization's
        # escalations go before it.
        tenant_hooks.on_membership_removed(live.membership_removed)
        tenant_hooks.on_organization_deleting(services.escalations_delete_for_organization)
        # The audit log shows an escalation's title and links to it.
        tenant_hooks.on_audit_target_links(history.escalation_links)
