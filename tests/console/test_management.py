"""Management pages: agents and keys, personal keys, members, settings, audit log, overview;
roles on every page and action; another organization's objects are 404 everywhere."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditEvent
from escalations.models import Escalation
from tenants.models import Agent, ApiKey, Membership, Organization
from tests.conftest import api_client, create_escalation

from .helpers import signed_in

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(r"ahk_live_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}")


def as_(tenant, person: str) -> Client:
    return signed_in(tenant.members[person].user)


def agent_of(tenant) -> Agent:
    return tenant.organization.agents.get()


# --- Agents and keys ------------------------------------------------------------------------------


def test_an_admin_creates_an_agent_and_a_key_shown_once_that_works(acme):
    client = as_(acme, "alice")
    response = client.post("/org/agents/", {"name": "billing-bot", "description": "Refunds"})
    agent = acme.organization.agents.get(name="billing-bot")
    assert response["Location"] == f"/org/agents/{agent.public_id}/"
    page = client.post(
        f"/org/agents/{agent.public_id}/",
        {"name": "prod", "mode": "live", "scopes": ["escalations:write", "escalations:read"]},
    ).content.decode()
    plaintext = KEY_RE.search(page).group(0)
    api_key = agent.api_keys.get()
    assert api_key.scopes == ["escalations:read", "escalations:write"]
    assert plaintext not in client.get(f"/org/agents/{agent.public_id}/").content.decode()
    created = api_client(plaintext).post(
        "/api/v1/escalations", {"kind": "approval", "title": "Refund"}, format="json"
    )
    assert created.status_code == 201
    assert created.json()["status"] == "pending"
    page = client.get(f"/org/agents/{agent.public_id}/").content.decode()
    assert '<span class="muted">never</span>' not in page  # it shows when it was last used
    assert AuditEvent.objects.filter(action="api_key.created", target=api_key.key_id).exists()


def test_a_duplicate_agent_name_is_refused_in_place(acme):
    response = as_(acme, "alice").post("/org/agents/", {"name": "Support-Bot"})
    assert response.status_code == 200
    assert "already exists" in response.content.decode()


def test_an_agent_key_cannot_get_answering_scopes(acme):
    agent = agent_of(acme)
    response = as_(acme, "alice").post(
        f"/org/agents/{agent.public_id}/", {"mode": "live", "scopes": ["responses:write"]}
    )
    assert response.status_code == 200
    assert "not one of the available choices" in response.content.decode()
    assert agent.api_keys.count() == 1


def test_revoking_a_key_stops_it_at_once(acme):
    agent = agent_of(acme)
    api_key = agent.api_keys.get()
    response = as_(acme, "alice").post(
        f"/org/agents/{agent.public_id}/keys/{api_key.key_id}/revoke/"
    )
    assert response.status_code == 302
    assert acme.agent_client().get("/api/v1/escalations").status_code == 401
    assert "revoked" in as_(acme, "vera").get(f"/org/agents/{agent.public_id}/").content.decode()


def test_a_member_creates_a_personal_key_whose_scopes_follow_the_role(acme):
    page = as_(acme, "bob").post("/org/keys/", {"name": "cli", "mode": "live"}).content.decode()
    assert KEY_RE.search(page)
    bob_key = acme.members["bob"].api_keys.get(name="cli")
    assert bob_key.scopes == ["escalations:read", "responses:write"]
    as_(acme, "vera").post("/org/keys/", {"name": "read", "mode": "live"})
    assert acme.members["vera"].api_keys.get(name="read").scopes == ["escalations:read"]


def test_a_member_revokes_only_their_own_personal_keys(acme):
    bobs = acme.members["bob"].api_keys.get()
    assert as_(acme, "vera").post(f"/org/keys/{bobs.key_id}/revoke/").status_code == 404
    assert as_(acme, "bob").post(f"/org/keys/{bobs.key_id}/revoke/").status_code == 302
    bobs.refresh_from_db()
    assert bobs.revoked_at is not None


# --- Members --------------------------------------------------------------------------------------


def test_an_admin_changes_a_role_and_it_is_audited(acme):
    bob = acme.members["bob"]
    response = as_(acme, "alice").post(f"/org/members/{bob.public_id}/role/", {"role": "viewer"})
    assert response.status_code == 302
    bob.refresh_from_db()
    assert bob.role == "viewer"
    event = AuditEvent.objects.get(action="membership.role_changed")
    assert event.data == {"email": "bob@acme.test", "before": "operator", "after": "viewer"}


def test_the_last_owner_cannot_be_demoted_or_removed(acme):
    alice = acme.members["alice"]
    client = as_(acme, "alice")
    page = client.post(
        f"/org/members/{alice.public_id}/role/", {"role": "admin"}, follow=True
    ).content.decode()
    assert "at least one owner" in page
    client.post(f"/org/members/{alice.public_id}/remove/")
    alice.refresh_from_db()
    assert alice.role == "owner"


def test_an_admin_cannot_touch_an_owner(acme):
    bob = acme.members["bob"]
    bob.role = "admin"
    bob.save()
    alice = acme.members["alice"]
    page = as_(acme, "bob").post(f"/org/members/{alice.public_id}/remove/", follow=True)
    assert "Only an owner" in page.content.decode()
    assert Membership.objects.filter(pk=alice.pk).exists()


def test_removing_a_member_ends_access_and_tells_the_live_queue(
    acme, django_capture_on_commit_callbacks
):
    bob = acme.members["bob"]
    bob_client = as_(acme, "bob")
    assert bob_client.get("/org/members/").status_code == 200
    layer = get_channel_layer()
    group = f"org.{acme.organization.public_id}"

    def remove_bob() -> Any:
        with django_capture_on_commit_callbacks(execute=True):
            return as_(acme, "alice").post(f"/org/members/{bob.public_id}/remove/")

    async def listen_while_removing() -> tuple[Any, dict]:
        # One event loop for the whole exchange: the Redis pub/sub layer keeps its channels
        # per loop, as a consumer does.
        channel = await layer.new_channel()
        await layer.group_add(group, channel)
        response = await sync_to_async(remove_bob)()
        return response, await asyncio.wait_for(layer.receive(channel), 5)

    response, message = async_to_sync(listen_while_removing)()
    assert response.status_code == 302
    assert message == {"type": "membership.removed", "membership": bob.public_id}
    assert bob_client.get("/org/members/").status_code == 403
    assert acme.client_for("bob").get("/api/v1/escalations").status_code == 401
    event = AuditEvent.objects.get(action="membership.removed")
    assert event.target == bob.public_id


# --- Settings -------------------------------------------------------------------------------------


def test_an_admin_renames_the_organization_and_requires_2fa(acme):
    client = as_(acme, "alice")
    response = client.post("/org/settings/", {"name": "Acme Corp", "require_2fa": "on"})
    assert response.status_code == 302
    acme.organization.refresh_from_db()
    assert acme.organization.name == "Acme Corp"
    assert acme.organization.require_2fa
    event = AuditEvent.objects.get(action="organization.updated")
    assert event.data["after"] == {
        "name": "Acme Corp",
        "require_2fa": True,
        "reject_reason_required": False,
        "payload_retention_days": None,
        "checkpoint_email": "",
    }


def test_only_an_owner_deletes_the_organization_after_typing_its_name(acme):
    create_escalation(acme)
    bob = acme.members["bob"]
    bob.role = "admin"
    bob.save()
    assert as_(acme, "bob").post("/org/delete/", {"confirm": "Acme"}).status_code == 403
    client = as_(acme, "alice")
    assert client.post("/org/delete/", {"confirm": "acme"}).status_code == 400
    assert client.post("/org/delete/", {"confirm": "Acme"}).status_code == 302
    assert not Organization.objects.filter(slug="acme").exists()
    assert not Escalation.objects.exists()
    assert AuditEvent.objects.filter(action="organization.deleted").exists()


# --- Audit log and overview -----------------------------------------------------------------------


def test_the_audit_log_filters_pages_and_shows_the_chain_status(acme):
    client = as_(acme, "vera")
    page = client.get("/org/audit/").content.decode()
    assert "Chain intact" in page
    assert "membership.created" in page
    filtered = client.get("/org/audit/?action=api_key").content.decode()
    assert "api_key.created" in filtered
    assert "membership.created</code>" not in filtered
    key_id = acme.members["bob"].api_keys.get().key_id
    by_target = client.get(f"/org/audit/?target={key_id}").content.decode()
    assert by_target.count("api_key.created</code>") == 1
    for n in range(60):
        create_escalation(acme, title=f"Refund {n}")
    second = client.get("/org/audit/?page=2")
    assert second.status_code == 200
    assert "Page 2 of" in second.content.decode()


def test_the_overview_shows_the_week_in_figures_with_a_fixed_number_of_queries(acme):
    now = timezone.now()
    bob, alice = acme.members["bob"], acme.members["alice"]
    for n, (status, wait) in enumerate([("approved", 60), ("approved", 120), ("rejected", 600)]):
        escalation = Escalation.objects.get(public_id=create_escalation(acme)["id"])
        Escalation.objects.filter(pk=escalation.pk).update(
            status=status,
            created_at=now - timedelta(seconds=wait + n),
            decided_at=now - timedelta(seconds=n),
            decided_by={"type": "user", "id": bob.public_id},
        )
    pending = Escalation.objects.get(public_id=create_escalation(acme)["id"])
    Escalation.objects.filter(pk=pending.pk).update(assignee=bob)
    create_escalation(acme)
    client = as_(acme, "vera")
    with CaptureQueriesContext(connection) as queries:
        page = client.get("/org/overview/").content.decode()
    assert re.search(r'data-testid="pending">2<', page)
    assert re.search(r'data-testid="median">120 s<', page)
    assert re.search(r'data-testid="p90">600 s<', page)
    assert re.search(r'data-testid="approval-rate">67%<', page)
    assert re.search(r"bob@acme.test</td><td>Operator</td><td>1</td>", page)
    assert alice.user.email in page
    few = len(queries)
    for _ in range(5):
        create_escalation(acme)
    with CaptureQueriesContext(connection) as queries:
        client.get("/org/overview/")
    assert len(queries) == few


# --- Roles on every page and action ---------------------------------------------------------------

READ_PAGES = ["/org/overview/", "/org/agents/", "/org/members/", "/org/keys/", "/org/audit/"]


@pytest.mark.parametrize("person", ["alice", "bob", "vera"])
@pytest.mark.parametrize("path", READ_PAGES)
def test_every_member_reads(acme, person, path):
    assert as_(acme, person).get(path).status_code == 200


def manage_actions(tenant) -> list[tuple[str, dict]]:
    agent = agent_of(tenant)
    key = agent.api_keys.get()
    member = tenant.members["bob"]
    return [
        ("/org/agents/", {"name": "new-bot"}),
        (f"/org/agents/{agent.public_id}/", {"mode": "live", "scopes": ["escalations:read"]}),
        (f"/org/agents/{agent.public_id}/keys/{key.key_id}/revoke/", {}),
        ("/org/members/", {"email": "new@example.test", "role": "viewer"}),
        (f"/org/members/{member.public_id}/role/", {"role": "viewer"}),
        (f"/org/members/{member.public_id}/remove/", {}),
        ("/org/settings/", {"name": "Renamed"}),
        ("/org/delete/", {"confirm": tenant.organization.name}),
    ]


@pytest.mark.parametrize("person", ["bob", "vera"])
def test_operators_and_viewers_cannot_manage(acme, person):
    client = as_(acme, person)
    assert client.get("/org/settings/").status_code == 403
    for path, data in manage_actions(acme):
        assert client.post(path, data).status_code == 403, path
    assert acme.organization.agents.count() == 1
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()
    assert Membership.objects.get(pk=acme.members["bob"].pk).role == "operator"
    assert Organization.objects.get(pk=acme.organization.pk).name == "Acme"


def test_a_signed_out_visitor_is_sent_to_sign_in_everywhere(acme):
    client = Client()
    for path in [*READ_PAGES, "/org/settings/"]:
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/account/login/")
    for path, data in manage_actions(acme):
        assert client.post(path, data).status_code == 302, path


# --- Tenant isolation -----------------------------------------------------------------------------


def foreign_urls(tenant) -> list[tuple[str, str]]:
    """Every console URL that names an object, pointed at ``tenant``'s objects."""
    agent = agent_of(tenant)
    agent_key = agent.api_keys.get()
    member = next(m for m in tenant.members.values() if m.role != "owner")
    personal_key = member.api_keys.get()
    invitation = tenant.organization.invitations.create(
        email="x@example.test",
        role="viewer",
        token_digest="0" * 64,
        expires_at=timezone.now() + timedelta(days=1),
    )
    return [
        ("get", f"/org/agents/{agent.public_id}/"),
        ("post", f"/org/agents/{agent.public_id}/"),
        ("post", f"/org/agents/{agent.public_id}/keys/{agent_key.key_id}/revoke/"),
        ("post", f"/org/keys/{personal_key.key_id}/revoke/"),
        ("post", f"/org/members/{member.public_id}/role/"),
        ("post", f"/org/members/{member.public_id}/remove/"),
        ("post", f"/org/invitations/{invitation.public_id}/revoke/"),
        ("post", "/org/switch/"),
    ]


@pytest.mark.parametrize("index", range(8))
def test_another_organizations_objects_are_404_on_every_console_page(acme, globex, index):
    method, path = foreign_urls(globex)[index]
    data = {"organization": globex.organization.public_id, "role": "viewer", "mode": "live"}
    response = getattr(as_(acme, "alice"), method)(path, data)
    assert response.status_code == 404
    assert Membership.objects.filter(organization=globex.organization).count() == 2
    assert not ApiKey.objects.filter(revoked_at__isnull=False).exists()
    assert globex.organization.agents.get().api_keys.count() == 1


@pytest.mark.parametrize(
    "path",
    [
        "/org/agents/agt_nope/",
        "/org/agents/not-an-id/",
        "/org/agents/agt_x/keys/short/revoke/",
        "/org/members/mem_%00/role/",
    ],
)
def test_malformed_and_unknown_ids_are_404(acme, path):
    response = as_(acme, "alice").post(path, {"role": "viewer"})
    assert response.status_code == 404
