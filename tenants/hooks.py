"""What tenants announce to the apps above it, which register in their ``AppConfig.ready``.

``tenants`` must not know the escalations' tables or the live queue's channel groups. When a
member is removed or an organization is about to be deleted, it calls these hooks inside the
same transaction; each app does its own part (delete its rows, close its sockets after commit).
"""

from __future__ import annotations

from collections.abc import Callable

from .models import Organization

MembershipRemoved = Callable[[Organization, str], None]
OrganizationDeleting = Callable[[Organization], None]
# (organization, audit targets) -> {target: (title, console url)} for the targets it knows.
AuditTargetLinks = Callable[[Organization, list[str]], dict[str, tuple[str, str]]]

_membership_removed: list[MembershipRemoved] = []
_organization_deleting: list[OrganizationDeleting] = []
_audit_target_links: list[AuditTargetLinks] = []


def on_membership_removed(hook: MembershipRemoved) -> None:
    """``hook(organization, membership_public_id)``, in the removal's transaction."""
    if hook not in _membership_removed:
        _membership_removed.append(hook)


def on_organization_deleting(hook: OrganizationDeleting) -> None:
    """``hook(organization)``, in the deletion's transaction, before the organization's row goes:
    delete what would otherwise block it (rows that PROTECT their agent or member)."""
    if hook not in _organization_deleting:
        _organization_deleting.append(hook)


def on_audit_target_links(hook: AuditTargetLinks) -> None:
    """``hook(organization, targets)`` names and links the audit log's targets it owns (one
    query for a page of events), so the log can show an escalation's title, not only its id."""
    if hook not in _audit_target_links:
        _audit_target_links.append(hook)


def membership_removed(organization: Organization, membership_public_id: str) -> None:
    for hook in list(_membership_removed):
        hook(organization, membership_public_id)


def organization_deleting(organization: Organization) -> None:
    for hook in list(_organization_deleting):
        hook(organization)


def audit_target_links(
    organization: Organization, targets: list[str]
) -> dict[str, tuple[str, str]]:
    links: dict[str, tuple[str, str]] = {}
    for hook in list(_audit_target_links):
        links.update(hook(organization, targets))
    return links
