"""A suggestion an admin turned down, so that the miner does not offer it again."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from tenants.models import Organization


class DismissedSuggestion(models.Model):
    """One dismissed rule of one organization.

    ``fingerprint`` is a digest of the rule itself (agent, action, argument, bound, outcome; see
    ``suggestions.mining.Suggestion.fingerprint``), not of its figures: new decisions that keep
    the same rule keep it dismissed, new decisions that move its bound make a new rule, shown
    again.
    """

    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="dismissed_suggestions"
    )
    fingerprint = models.CharField(max_length=64)
    condition = models.TextField()
    outcome = models.CharField(max_length=16)
    dismissed_by = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "fingerprint"], name="one_dismissal_per_suggestion"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.fingerprint} of {self.organization_id}"
