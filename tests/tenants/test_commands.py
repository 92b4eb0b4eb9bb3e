"""The tenant management commands print only what a script needs, and refuse clearly."""

from __future__ import annotations

import json
import re
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from tenants.models import PERSONAL_SCOPES, Agent, ApiKey, Membership, Organization
from tests.conftest import APPROVAL, api_client

KEY = re.compile(r"ahk_(live|test)_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}")

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_createorg_prints_only_the_slug(db):
    out = run("createorg", "Initech Corp", "--owner", "Peter@Initech.test", "--password", "pw-1234")
    assert out == "initech-corp\n"
    organization = Organization.objects.get(slug="initech-corp")
    owner = organization.memberships.get()
    assert owner.role == Membership.Role.OWNER
    assert owner.user.email == "peter@initech.test"
    assert owner.user.check_password("pw-1234")


def test_createorg_makes_a_unique_slug_for_a_taken_name(db):
    assert run("createorg", "Initech", "--owner", "a@initech.test").strip() == "initech"
    assert run("createorg", "Initech", "--owner", "b@initech.test").strip() == "initech-2"


def test_createorg_uses_the_slug_it_is_given(db):
    assert (
        run("createorg", "Initech", "--owner", "a@initech.test", "--slug", "tps").strip() == "tps"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Initech", "--owner", "not-an-email"], "not an e-mail address"),
        (["Acme again", "--owner", "a@acme.test", "--slug", "acme"], "already exists"),
        (["Initech", "--owner", "a@initech.test", "--slug", "Not A Slug!"], "valid “slug”"),
        (["Initech", "--owner", "a@initech.test", "--slug", "x" * 65], "at most 64 characters"),
    ],
)
def test_createorg_refuses_bad_input_clearly_and_creates_nothing(acme, args, message):
    organizations = Organization.objects.count()
    with pytest.raises(CommandError, match=message):
        run("createorg", *args)
    assert Organization.objects.count() == organizations


def test_createapikey_for_an_agent_prints_only_a_working_key_and_creates_the_agent(acme):
    out = run("createapikey", "--org", "acme", "--agent", "billing-bot")
    key = out.strip()
    assert out == key + "\n"
    assert KEY.fullmatch(key)
    agent = Agent.objects.get(organization=acme.organization, name="billing-bot")
    api_key = ApiKey.objects.get(key_id=key.split("_")[2])
    assert api_key.agent == agent
    created = api_client(key).post("/api/v1/escalations", APPROVAL, format="json")
    assert created.status_code == 201
    assert created.json()["agent"] == {"id": agent.public_id, "name": "billing-bot"}


def test_createapikey_reuses_an_existing_agent(acme):
    run("createapikey", "--org", "acme", "--agent", "support-bot")
    run("createapikey", "--org", "acme", "--agent", "support-bot")
    assert Agent.objects.filter(organization=acme.organization, name="support-bot").count() == 1
    assert ApiKey.objects.filter(agent__name="support-bot").count() == 3  # the fixture's + 2


def test_createapikey_with_options(acme):
    key = run(
        "createapikey", "--org", "acme", "--agent", "reader", "--scopes", "escalations:read",
        "--expires-in-days", "7", "--test", "--name", "ci",
    ).strip()  # fmt: skip
    assert key.startswith("ahk_test_")
    api_key = ApiKey.objects.get(key_id=key.split("_")[2])
    assert api_key.scopes == ["escalations:read"]
    assert api_key.name == "ci"
    assert api_key.expires_at is not None
    client = api_client(key)
    assert client.get("/api/v1/escalations").status_code == 200
    refused = client.post("/api/v1/escalations", APPROVAL, format="json")
    assert refused.status_code == 403
    assert "escalations:write" in refused.json()["detail"]


def test_createapikey_for_a_member_gives_a_personal_key(acme):
    key = run("createapikey", "--org", "acme", "--user", "BOB@acme.test").strip()
    assert KEY.fullmatch(key)
    api_key = ApiKey.objects.get(key_id=key.split("_")[2])
    assert api_key.membership == acme.members["bob"]
    assert api_key.agent is None
    assert set(api_key.scopes) == PERSONAL_SCOPES
    escalation = api_client(acme.agent_key).post("/api/v1/escalations", APPROVAL, format="json")
    answer = api_client(key).post(
        f"/api/v1/escalations/{escalation.json()['id']}/responses",
        {"outcome": "approve"},
        format="json",
    )
    assert answer.status_code == 201
    assert answer.json()["decision"]["decided_by"]["email"] == "bob@acme.test"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--org", "no-such-org", "--agent", "x"], "no organization with slug 'no-such-org'"),
        (["--org", "acme", "--user", "charlie@globex.test"], "not a member of acme"),
        (["--org", "acme", "--user", "nobody@acme.test"], "not a member of acme"),
        (["--org", "acme", "--user", "bob@acme.test", "--scopes", "escalations:write"],
         "escalations:write are not allowed on personal keys"),
        (["--org", "acme", "--agent", "new-bot", "--scopes", "responses:write"],
         "responses:write are not allowed on agent keys"),
        (["--org", "acme", "--agent", "new-bot", "--scopes", "escalations:reed"],
         "escalations:reed are not allowed"),
        (["--org", "acme", "--agent", "new-bot", "--expires-in-days", "0"], "at least 1"),
    ],
)  # fmt: skip
def test_createapikey_refuses_clearly_and_leaves_nothing_behind(acme, globex, args, message):
    keys, agents = ApiKey.objects.count(), Agent.objects.count()
    with pytest.raises(CommandError, match=re.escape(message)):
        run("createapikey", *args)
    assert ApiKey.objects.count() == keys
    assert Agent.objects.count() == agents


def test_createapikey_needs_exactly_one_owner(acme):
    with pytest.raises(CommandError, match="--agent"):
        run("createapikey", "--org", "acme")
    with pytest.raises(CommandError, match="not allowed with argument"):
        run("createapikey", "--org", "acme", "--agent", "x", "--user", "bob@acme.test")


def counts() -> dict[str, int]:
    return {
        "organizations": Organization.objects.count(),
        "memberships": Membership.objects.count(),
        "agents": Agent.objects.count(),
        "keys": ApiKey.objects.count(),
        "usable keys": ApiKey.objects.filter(revoked_at__isnull=True).count(),
    }


def seed(tmp_path: Any) -> dict[str, str]:
    with override_settings(DATA_DIR=tmp_path):
        return json.loads(run("seed_demo", "--json"))


def test_seed_demo_creates_a_working_demo(db, tmp_path):
    demo = seed(tmp_path)
    assert json.loads((tmp_path / ".demo-credentials.json").read_text()) == demo
    assert (tmp_path / ".demo-credentials.json").stat().st_mode & 0o777 == 0o600
    created = api_client(demo["agent_key"]).post("/api/v1/escalations", APPROVAL, format="json")
    assert created.status_code == 201
    answer = api_client(demo["operator_key"]).post(
        f"/api/v1/escalations/{created.json()['id']}/responses",
        {"outcome": "approve"},
        format="json",
    )
    assert answer.status_code == 201


def test_seed_demo_owner_manages_the_demo_but_is_no_platform_superuser(db, tmp_path):
    demo = seed(tmp_path)
    owner = Membership.objects.select_related("user").get(user__email=demo["owner_email"])
    assert owner.role == Membership.Role.OWNER
    assert not owner.user.is_superuser
    assert not owner.user.is_staff


def test_seed_demo_keeps_the_base_url_for_the_sdk_examples(db, tmp_path):
    with override_settings(AWAITHUMAN_BASE_URL="http://127.0.0.1:8123"):
        demo = seed(tmp_path)
    assert demo["base_url"] == "http://127.0.0.1:8123"


def test_seed_demo_twice_is_idempotent(db, tmp_path):
    first = seed(tmp_path)
    before = counts()
    second = seed(tmp_path)
    assert second == first
    assert counts() == before
    assert before == {
        "organizations": 1,
        "memberships": 2,
        "agents": 1,
        "keys": 2,
        "usable keys": 2,
    }


def test_seed_demo_issues_new_keys_when_the_saved_ones_are_lost(db, tmp_path):
    first = seed(tmp_path)
    (tmp_path / ".demo-credentials.json").unlink()
    second = seed(tmp_path)
    assert second["agent_key"] != first["agent_key"]
    assert api_client(first["agent_key"]).get("/api/v1/escalations").status_code == 401
    assert api_client(second["agent_key"]).get("/api/v1/escalations").status_code == 200
    assert counts()["usable keys"] == 2
    assert counts()["organizations"] == 1


def test_seed_demo_without_json_prints_the_keys_and_a_curl(db, tmp_path):
    with override_settings(DATA_DIR=tmp_path):
        out = run("seed_demo")
    demo = json.loads((tmp_path / ".demo-credentials.json").read_text())
    assert demo["agent_key"] in out
    assert "curl" in out
