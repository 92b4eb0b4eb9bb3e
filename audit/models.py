"""The audit trail: one append-only, hash-chained sequence of events per organization.

``audit`` depends on no other app of ours, so events hold the organization's primary key as a
plain integer rather than a foreign key; ``settings.AUDIT_ORGANIZATION_MODEL`` names the model it
points at (as ``AUTH_USER_MODEL`` does for users). That also means deleting an organization never
cascades into its audit trail.

How the chain is built and checked is in ``audit.services``; the database-level refusal of UPDATE,
DELETE and TRUNCATE is in ``audit.triggers``.
"""

from __future__ import annotations

from django.db import models

GENESIS_HASH = "0" * 64


class AuditEvent(models.Model):
    """One thing that happened in an organization. Written only by ``audit_record``.

    An event is inserted *unsealed* (``seq``, ``prev_hash`` and ``hash`` empty) in the
    transaction of the change it records, and sealed shortly after commit by ``audit_seal``,
    which gives it the next ``seq`` of its organization's chain and its hash. Sealing is the
    only change the database lets anyone make to an event. ``seq`` counts 1, 2, 3, … per
    organization with no gaps; ``hash`` covers ``prev_hash``, ``seq`` and every other field
    except the primary key (see ``audit.services`` for the exact bytes).
    """

    # No separate index: the unique (organization_id, seq) constraint below leads with this column
    # and serves every per-organization lookup.
    organization_id = models.PositiveBigIntegerField()
    seq = models.PositiveBigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=64)
    actor = models.JSONField()
    target = models.CharField(max_length=64, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    # NULL, not "", marks an unsealed event: the triggers let only NULL become a value.
    prev_hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    hash = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001

    class Meta:
        # Insertion order, which the sealer follows: it is seq order for sealed events, and puts
        # the few events not sealed yet where they belong, at the end.
        ordering = ["organization_id", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization_id", "seq"], name="audit_event_unique_org_seq"
            ),
        ]
        indexes = [
            # The sealer's scan: the few events not sealed yet, in insertion order.
            models.Index(
                fields=["organization_id", "id"],
                name="audit_event_unsealed",
                condition=models.Q(seq__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"org {self.organization_id} #{self.seq} {self.action}"


class ChainHead(models.Model):
    """The latest ``seq`` and ``hash`` of one organization's chain; the only mutable audit row.

    The sealer locks this row (``SELECT … FOR UPDATE``) while it seals, which serialises sealers
    of one organization; the writers that insert events never touch it.
    """

    organization_id = models.PositiveBigIntegerField(unique=True)
    seq = models.PositiveBigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    def __str__(self) -> str:
        return f"org {self.organization_id} head #{self.seq}"


class Checkpoint(models.Model):
    """A signed statement of one organization's chain head (``audit.checkpoints``).

    Kept so that it can be served again and bundled for auditors; its worth is in the copies
    kept *outside* this database (webhooks, auditors), which a rewrite here cannot reach.
    """

    public_id = models.CharField(max_length=32, unique=True, editable=False)
    organization_id = models.PositiveBigIntegerField()
    seq = models.PositiveBigIntegerField()
    hash = models.CharField(max_length=64)
    # The signed note, byte for byte as issued.
    note = models.TextField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["organization_id", "-seq"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization_id", "seq"], name="audit_checkpoint_unique_org_seq"
            ),
        ]

    def __str__(self) -> str:
        return f"org {self.organization_id} checkpoint #{self.seq}"
