"""A new organization's first visit: the empty queue says what to do next, and the agent's
new key comes with a curl that works against the address the console was opened at."""

from __future__ import annotations

import re

import pytest

from audit.services import SYSTEM_ACTOR
from tenants.services import organization_create, user_get_or_create
from tests.conftest import api_client, create_escalation
from tests.console.helpers import signed_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def newcomer():
    user = user_get_or_create(email="founder@newco.test", password="correct-horse-42")
    organization = organization_create(name="NewCo", owner=user, actor=SYSTEM_ACTOR)
    return organization, user


def test_a_new_organization_is_shown_the_way_to_its_first_escalation(newcomer):
    _, founder = newcomer
    page = signed_in(founder).get("/").content.decode()
    assert "three steps to your first escalation" in page
    assert 'href="/org/agents/">Create an agent</a>' in page


def test_the_guide_marks_a_created_agent_done_and_an_operator_is_told_whom_to_ask(acme):
    acme.organization.escalations.all().delete()
    page = signed_in(acme.members["bob"].user).get("/").content.decode()
    assert '<li class="done"><strong>Create an agent</strong>' in page
    other = user_get_or_create(email="solo@solo.test", password="correct-horse-42")
    solo = organization_create(name="Solo", owner=other, actor=SYSTEM_ACTOR)
    solo.memberships.filter(user=other).update(role="operator")
    page = signed_in(other).get("/").content.decode()
    assert "Ask an owner or admin of Solo to create one." in page


def test_the_guide_is_gone_once_an_agent_has_asked(acme):
    create_escalation(acme)
    page = signed_in(acme.members["bob"].user).get("/").content.decode()
    assert "three steps to your first escalation" not in page


def test_a_new_agent_key_comes_with_a_curl_for_the_address_in_use(newcomer):
    organization, founder = newcomer
    client = signed_in(founder)
    agent_page = client.post("/org/agents/", {"name": "support-bot"}, follow=True)
    agent_url = agent_page.redirect_chain[-1][0]
    page = client.post(
        agent_url,
        {"name": "", "mode": "live", "scopes": ["escalations:read", "escalations:write"]},
        HTTP_HOST="127.0.0.1:8123",
    ).content.decode()
    curl = re.search(r'<pre id="new-api-key-curl">(.*?)</pre>', page, re.S).group(1)
    assert curl.startswith("curl -s http://127.0.0.1:8123/api/v1/escalations")
    key = re.search(r"Bearer (ahk_\w+)", curl).group(1)
    created = api_client(key).post(
        "/api/v1/escalations",
        {"kind": "approval", "title": "My first escalation"},
        format="json",
    )
    assert created.status_code == 201
    assert organization.escalations.count() == 1
