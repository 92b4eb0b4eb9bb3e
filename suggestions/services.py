"""What an admin does with a suggestion: draft a policy from it, or dismiss it. Each is one
transaction with its audit event; neither changes how escalations are decided."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from audit.services import audit_record
from escalations.models import Policy
from escalations.policies import policy_snapshot
from tenants.models import Organization

from .mining import Suggestion
from .models import DismissedSuggestion


def policy_draft_create(
    *, organization: Organization, suggestion: Suggestion, actor: dict[str, Any]
) -> Policy:
    """A disabled policy holding the suggestion's rule, placed before every other policy (so
    that, once an admin enables it, it wins over the broader rule that asked a human).

    It never takes effect by itself: ``enabled`` is False until someone turns it on in the
    policy editor, which audits that change like any other edit.
    """
    with transaction.atomic():
        first = (
            Policy.objects.filter(organization=organization)
            .order_by("priority")
            .values_list("priority", flat=True)
            .first()
        )
        policy = Policy.objects.create(
            organization=organization,
            name=suggestion.name,
            enabled=False,
            priority=(first if first is not None else 100) - 1,
            condition=suggestion.condition,
            outcome=suggestion.rule.outcome,
        )
        policy.agents.set([suggestion.agent])
        # The shape of the policy editor's own "policy.created" events (escalations.admin),
        # with where the rule came from and what it rests on.
        after = {
            **policy_snapshot(policy),
            "enabled": policy.enabled,
            "priority": policy.priority,
            "agents": [suggestion.agent.public_id],
        }
        dry_run = suggestion.dry_run
        audit_record(
            organization_id=organization.pk,
            action="policy.created",
            actor=actor,
            target=policy.public_id,
            data={
                "changed": sorted(after),
                "before": None,
                "after": after,
                "source": "suggestion",
                "fingerprint": suggestion.fingerprint,
                "evidence": {
                    "support": suggestion.support,
                    "disagreed": suggestion.disagreed,
                    "dry_run_matched": dry_run.matched if dry_run else 0,
                    "dry_run_contradicted": dry_run.contradicted if dry_run else 0,
                },
            },
        )
    return policy


def suggestion_dismiss(
    *, organization: Organization, suggestion: Suggestion, actor: dict[str, Any]
) -> DismissedSuggestion:
    """Remember that this rule was turned down; dismissing it twice is a no-op."""
    try:
        with transaction.atomic():
            dismissed = DismissedSuggestion.objects.create(
                organization=organization,
                fingerprint=suggestion.fingerprint,
                condition=suggestion.condition,
                outcome=suggestion.rule.outcome,
                dismissed_by=actor,
            )
            audit_record(
                organization_id=organization.pk,
                action="suggestion.dismissed",
                actor=actor,
                target=suggestion.fingerprint,
                data={
                    "fingerprint": suggestion.fingerprint,
                    "condition": suggestion.condition,
                    "outcome": suggestion.rule.outcome,
                    "support": suggestion.support,
                },
            )
    except IntegrityError:
        return DismissedSuggestion.objects.get(
            organization=organization, fingerprint=suggestion.fingerprint
        )
    return dismissed
