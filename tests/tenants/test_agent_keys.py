"""Agents can be disabled (every key refused at once) and keys rolled with a grace period in
which the old and the new key both work; each change is audited."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import SYSTEM_ACTOR
from awaithuman.asgi import application
from tenants.models import ApiKey
from tenants.services import (
    KeyRollRefused,
    agent_disable,
    agent_enable,
    api_key_create,
    api_key_roll,
)
from tests.conftest import api_client, create_escalation
from tests.console.helpers import signed_in

pytestmark = pytest.mark.django_db

KEY_RE = re.compile(r"ahk_live_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}")


def status(key: str) -> int:
    return api_client(key).get("/api/v1/escalations").status_code


def second_key(tenant) -> str:
    agent = tenant.organization.agents.get()
    return api_key_create(
        organization=tenant.organization, agent=agent, actor=SYSTEM_ACTOR
    ).plaintext


def test_a_disabled_agent_has_every_key_refused_at_once(acme, globex):
    other = second_key(acme)
    agent = acme.organization.agents.get()
    agent_disable(agent=agent, actor=SYSTEM_ACTOR)
    for key in (acme.agent_key, other):
        response = api_client(key).get("/api/v1/escalations")
        assert response.status_code == 401
        assert "disabled" in response.json()["detail"]
    # Personal keys and other organizations' agents are untouched.
    assert status(acme.personal_keys["bob"]) == 200
    assert status(globex.agent_key) == 200
    agent_enable(agent=agent, actor=SYSTEM_ACTOR)
    assert status(acme.agent_key) == status(other) == 200
    actions = AuditEvent.objects.filter(target=agent.public_id).values_list("action", flat=True)
    assert list(actions)[-2:] == ["agent.disabled", "agent.enabled"]


@pytest.mark.django_db(transaction=True)
async def test_the_long_poll_refuses_a_disabled_agents_key(acme):
    created = await sync_to_async(create_escalation)(acme)
    agent = await sync_to_async(acme.organization.agents.get)()
    await sync_to_async(agent_disable)(agent=agent, actor=SYSTEM_ACTOR)
    communicator = HttpCommunicator(
        application,
        "GET",
        f"/api/v1/escalations/{created['id']}/wait?timeout=0",
        headers=[(b"authorization", f"Bearer {acme.agent_key}".encode())],
    )
    response = await communicator.get_response(timeout=5)
    assert response["status"] == 401


def test_a_rolled_key_keeps_working_for_the_grace_period_beside_the_new_one(acme):
    old = ApiKey.objects.get(key_id=acme.agent_key.split("_")[2])
    old.rate_limit = 77
    old.name = "prod"
    old.save()
    issued = api_key_roll(api_key=old, grace=timedelta(hours=24), actor=SYSTEM_ACTOR)
    assert status(acme.agent_key) == status(issued.plaintext) == 200
    new = issued.api_key
    assert (new.agent_id, new.scopes, new.name, new.rate_limit, new.mode) == (
        old.agent_id,
        old.scopes,
        "prod",
        77,
        old.mode,
    )
    old.refresh_from_db()
    assert timedelta(hours=23) < old.expires_at - timezone.now() <= timedelta(hours=24)
    event = AuditEvent.objects.get(action="api_key.rolled")
    assert event.target == old.key_id
    assert event.data["new_key"] == new.key_id
    assert acme.agent_key not in str(event.data) and issued.plaintext not in str(event.data)

    old.expires_at = timezone.now() - timedelta(seconds=1)  # the grace period is over
    old.save(update_fields=["expires_at"])
    assert status(acme.agent_key) == 401
    assert status(issued.plaintext) == 200


def test_rolling_with_no_grace_ends_the_old_key_at_once(acme):
    old = ApiKey.objects.get(key_id=acme.agent_key.split("_")[2])
    issued = api_key_roll(api_key=old, grace=timedelta(0), actor=SYSTEM_ACTOR)
    assert status(acme.agent_key) == 401
    assert status(issued.plaintext) == 200


def test_a_revoked_key_or_a_too_long_grace_cannot_be_rolled(acme):
    old = ApiKey.objects.get(key_id=acme.agent_key.split("_")[2])
    with pytest.raises(KeyRollRefused, match="grace period"):
        api_key_roll(api_key=old, grace=timedelta(days=31), actor=SYSTEM_ACTOR)
    old.revoked_at = timezone.now()
    old.save(update_fields=["revoked_at"])
    with pytest.raises(KeyRollRefused, match="still works"):
        api_key_roll(api_key=old, grace=timedelta(hours=1), actor=SYSTEM_ACTOR)
    assert ApiKey.objects.filter(agent__organization=acme.organization).count() == 1


# --- Console --------------------------------------------------------------------------------------


def test_an_admin_disables_and_enables_an_agent_in_the_console(acme):
    agent = acme.organization.agents.get()
    alice = signed_in(acme.members["alice"].user)
    response = alice.post(f"/org/agents/{agent.public_id}/disable/")
    assert response.status_code == 302
    assert status(acme.agent_key) == 401
    assert "disabled" in alice.get(f"/org/agents/{agent.public_id}/").content.decode()
    alice.post(f"/org/agents/{agent.public_id}/enable/")
    assert status(acme.agent_key) == 200


def test_an_admin_rolls_a_key_in_the_console_and_sees_the_new_one_once(acme):
    agent = acme.organization.agents.get()
    key_id = acme.agent_key.split("_")[2]
    alice = signed_in(acme.members["alice"].user)
    page = alice.post(
        f"/org/agents/{agent.public_id}/keys/{key_id}/roll/", {"grace_hours": "1"}
    ).content.decode()
    shown = KEY_RE.findall(page)
    assert len(set(shown)) == 1
    assert shown[0] != acme.agent_key
    assert status(shown[0]) == status(acme.agent_key) == 200
    assert shown[0] not in alice.get(f"/org/agents/{agent.public_id}/").content.decode()


def test_operators_cannot_disable_agents_or_roll_keys(acme):
    agent = acme.organization.agents.get()
    key_id = acme.agent_key.split("_")[2]
    bob = signed_in(acme.members["bob"].user)
    assert bob.post(f"/org/agents/{agent.public_id}/disable/").status_code == 403
    roll = f"/org/agents/{agent.public_id}/keys/{key_id}/roll/"
    assert bob.post(roll, {"grace_hours": "1"}).status_code == 403
    assert status(acme.agent_key) == 200
    assert ApiKey.objects.filter(agent=agent).count() == 1


def test_another_organizations_agent_and_key_are_404(acme, globex):
    agent = globex.organization.agents.get()
    key_id = globex.agent_key.split("_")[2]
    alice = signed_in(acme.members["alice"].user)
    assert alice.post(f"/org/agents/{agent.public_id}/disable/").status_code == 404
    roll = f"/org/agents/{agent.public_id}/keys/{key_id}/roll/"
    assert alice.post(roll, {"grace_hours": "1"}).status_code == 404
    assert status(globex.agent_key) == 200


def test_a_grace_period_outside_the_choices_is_refused_without_a_new_key(acme):
    agent = acme.organization.agents.get()
    key_id = acme.agent_key.split("_")[2]
    alice = signed_in(acme.members["alice"].user)
    for grace in ("999", "-1", "soon", ""):
        response = alice.post(
            f"/org/agents/{agent.public_id}/keys/{key_id}/roll/", {"grace_hours": grace}
        )
        assert response.status_code == 302
    assert ApiKey.objects.filter(agent=agent).count() == 1
