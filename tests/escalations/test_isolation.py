"""Tenant isolation and authentication across the whole agent API.

Every route under ``/api/v1/`` × every method it allows is called with Globex's keys against
Acme's escalation: each answers 404 (the same 404 as for an id that does not exist) and nothing of
Acme's changes. The table below is checked against Django's URL resolver and the ASGI router, so
a new route or method fails here until it is added, with its isolation case.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.urls import get_resolver
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import SYSTEM_ACTOR
from awaithuman.asgi import application
from escalations.consumers import wait_endpoint
from escalations.models import Escalation, Policy
from escalations.urls import urlpatterns as escalation_urlpatterns
from tenants.ids import encode_base62, random_base62
from tenants.models import ApiKey
from tenants.services import api_key_create, api_key_revoke
from tests.conftest import APPROVAL, Tenant, api_client, create_escalation
from webhooks.urls import urlpatterns as callback_urlpatterns

# Every module included under /api/v1/ (awaithuman/urls.py).
urlpatterns = [*escalation_urlpatterns, *callback_urlpatterns]

PROBLEM = "application/problem+json"
UNKNOWN_ID = "esc_00000000000000000000"
WAIT_ROUTE = "escalation-wait"

# (route name, method) → which of Globex's keys holds the scope the call needs. Routes with an
# escalation id must answer 404 for Acme's; the collections are checked for leaks separately.
BY_ID = {
    ("escalation", "GET"): "agent",
    ("escalation", "HEAD"): "personal",
    ("escalation-cancel", "POST"): "agent",
    ("escalation-claim", "POST"): "personal",
    ("escalation-claim", "DELETE"): "personal",
    ("escalation-responses", "POST"): "personal",
    ("escalation-callbacks", "GET"): "agent",
    ("escalation-callbacks", "HEAD"): "personal",
    ("escalation-callbacks-replay", "POST"): "agent",
}
WAIT_BY_ID = {(WAIT_ROUTE, "GET"): "agent", (WAIT_ROUTE, "HEAD"): "personal"}
COLLECTIONS = {
    ("escalations", "GET"),
    ("escalations", "HEAD"),
    ("escalations", "POST"),
    ("escalations-export", "GET"),
    ("escalations-export", "HEAD"),
    ("policies", "GET"),
    ("policies", "HEAD"),
    ("policies-evaluate", "POST"),
    ("audit-checkpoints", "GET"),
    ("audit-checkpoints", "HEAD"),
    ("audit-checkpoints", "POST"),
    ("export", "GET"),
    ("export", "HEAD"),
    ("audit-bundle", "GET"),
    ("audit-bundle", "HEAD"),
    # Aggregates only; another organization's rows never counted: tests/escalations/test_insights.
    ("insights", "GET"),
    ("insights", "HEAD"),
}
# By id, but the id is a checkpoint's: checked with Acme's checkpoint below.
CHECKPOINT_BY_ID = {("audit-checkpoint", "GET"), ("audit-checkpoint", "HEAD")}
OPTIONS = {(pattern.name, "OPTIONS") for pattern in urlpatterns}
BODIES = {"escalation-responses": {"outcome": "approve", "comment": "from the wrong tenant"}}


def django_routes() -> set[tuple[str, str]]:
    """(name, method) for every route under /api/v1/ and every method its view implements."""
    routes = set()
    for pattern in urlpatterns:
        view = pattern.callback.cls
        methods = {name.upper() for name in view.http_method_names if hasattr(view, name)}
        if "GET" in methods:
            methods.add("HEAD")  # Django's View answers HEAD with its GET
        routes |= {(pattern.name, method) for method in methods}
    return routes


def path_for(name: str, public_id: str) -> str:
    if name == WAIT_ROUTE:
        return f"/api/v1/escalations/{public_id}/wait?timeout=0"
    pattern = next(pattern for pattern in urlpatterns if pattern.name == name)
    return "/api/v1/" + str(pattern.pattern).replace("<str:public_id>", public_id)


def call(key: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    client = api_client(key)
    if body is None:
        return client.generic(method, path)
    return client.generic(method, path, json.dumps(body), content_type="application/json")


def globex_key(globex: Tenant, kind: str) -> str:
    return globex.agent_key if kind == "agent" else globex.personal_keys["charlie"]


def snapshot(tenant: Tenant) -> list[tuple[Any, ...]]:
    """What another tenant must never change: each escalation's state, and the audit trail."""
    escalations = Escalation.objects.filter(organization=tenant.organization).order_by("pk")
    state = [
        (e.public_id, e.status, e.assignee_id, e.claimed_at, e.decided_at, e.responses.count())
        for e in escalations
    ]
    events = AuditEvent.objects.filter(organization_id=tenant.organization.pk).count()
    return [*state, ("audit events", events)]


@pytest.fixture
def acme_claimed(acme: Tenant) -> str:
    """A pending Acme escalation that bob has claimed (so a foreign release would show), and an
    Acme policy that approves everything (so a foreign create or dry run that used it would show).
    """
    created = create_escalation(acme, external_id="acme-run-1")
    Policy.objects.create(
        organization=acme.organization, name="Acme approves all", outcome="auto_approve"
    )
    assert (
        acme.client_for("bob").post(f"/api/v1/escalations/{created['id']}/claim").status_code == 200
    )
    return created["id"]


def test_every_api_route_and_method_is_in_the_isolation_table():
    assert django_routes() == set(BY_ID) | COLLECTIONS | CHECKPOINT_BY_ID | OPTIONS


def test_the_table_covers_every_module_included_under_api_v1():
    included = [
        pattern.urlconf_module.__name__
        for pattern in get_resolver().url_patterns
        if str(pattern.pattern) == "api/v1/"
    ]
    assert included == ["escalations.urls", "webhooks.urls"]


def test_the_wait_route_is_the_only_route_served_ahead_of_django():
    *ahead, django = application.application_mapping["http"].routes
    assert [route.callback for route in ahead] == [wait_endpoint]
    assert ahead[0].pattern.match(path_for(WAIT_ROUTE, UNKNOWN_ID).split("?")[0].lstrip("/"))
    assert {route for route, _ in WAIT_BY_ID} == {WAIT_ROUTE}
    assert str(django.pattern) == ""


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "method"), sorted(BY_ID))
def test_other_organization_gets_404_for_an_escalation_by_id(
    acme, globex, acme_claimed, route, method
):
    key = globex_key(globex, BY_ID[route, method])
    before = snapshot(acme)
    response = call(key, method, path_for(route, acme_claimed), BODIES.get(route))
    unknown = call(key, method, path_for(route, UNKNOWN_ID), BODIES.get(route))
    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM
    if method != "HEAD":
        assert response.json()["status"] == 404
        assert response.json() == unknown.json()  # no oracle: the same as a made-up id
    assert snapshot(acme) == before


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "method"), sorted(OPTIONS))
def test_options_says_the_same_for_a_foreign_id_as_for_a_made_up_one(
    acme, globex, acme_claimed, route, method
):
    key = globex_key(globex, "agent")
    before = snapshot(acme)
    response = call(key, method, path_for(route, acme_claimed))
    unknown = call(key, method, path_for(route, UNKNOWN_ID))
    assert response.status_code == unknown.status_code
    assert response.content.replace(acme_claimed.encode(), b"") == unknown.content.replace(
        UNKNOWN_ID.encode(), b""
    )
    assert snapshot(acme) == before


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_other_organization_never_sees_acme_in_the_list(acme, globex, acme_claimed, method):
    acme_agent = Escalation.objects.get(public_id=acme_claimed).agent.public_id
    for query in ("", "?external_id=acme-run-1", f"?agent={acme_agent}", "?status=pending"):
        for key in (globex.agent_key, globex.personal_keys["charlie"]):
            response = call(key, method, f"/api/v1/escalations{query}")
            assert response.status_code == 200
            assert acme_claimed.encode() not in response.content
            if method == "GET":
                assert response.json()["results"] == []
    # Nor searched for, nor downloaded.
    for query in ("?q=refund", "?format=jsonl", "?format=csv&q=refund"):
        path = "/api/v1/escalations" + ("/export" if "format" in query else "") + query
        response = call(globex.agent_key, method, path)
        assert response.status_code == 200
        content = b"".join(response.streaming_content) if response.streaming else response.content
        assert acme_claimed.encode() not in content


@pytest.mark.django_db
def test_other_organization_creates_in_its_own_organization_under_its_own_policies(
    acme, globex, acme_claimed
):
    before = snapshot(acme)
    response = call(globex.agent_key, "POST", "/api/v1/escalations", APPROVAL)
    assert response.status_code == 201
    assert response.json()["status"] == "pending"  # Acme's approve-all policy did not apply
    assert response.json()["policy"] is None
    escalation = Escalation.objects.get(public_id=response.json()["id"])
    assert escalation.organization == globex.organization
    assert snapshot(acme) == before


@pytest.mark.django_db
def test_policy_evaluation_never_uses_another_organizations_policy(acme, globex, acme_claimed):
    before = snapshot(acme)
    response = call(globex.agent_key, "POST", "/api/v1/policies/evaluate", APPROVAL)
    assert response.status_code == 200
    assert response.json()["policy"] is None
    assert response.json()["outcome"] == "require_human"
    assert snapshot(acme) == before


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_other_organization_never_sees_acme_policies(acme, globex, acme_claimed, method):
    response = call(globex.agent_key, method, "/api/v1/policies")
    assert response.status_code == 200
    assert b"Acme approves all" not in response.content
    if method == "GET":
        assert response.json()["results"] == []


@pytest.mark.django_db
@pytest.mark.parametrize(("route", "method"), sorted(CHECKPOINT_BY_ID))
def test_other_organization_gets_404_for_an_audit_checkpoint(
    acme, globex, acme_claimed, route, method
):
    acme_checkpoint = acme.agent_client().post("/api/v1/audit/checkpoints").json()["id"]
    for key in (globex.agent_key, globex.personal_keys["charlie"]):
        response = call(key, method, path_for(route, acme_checkpoint))
        assert response.status_code == 404
        latest = call(key, "GET", "/api/v1/audit/checkpoints/latest")
        assert acme_checkpoint.encode() not in latest.content
        listed = call(key, "GET", "/api/v1/audit/checkpoints")
        assert acme_checkpoint.encode() not in listed.content


@pytest.mark.django_db
@pytest.mark.parametrize("export_format", ["chat", "preference", "decisions"])
def test_other_organization_never_sees_acme_in_an_export(acme, globex, acme_claimed, export_format):
    answered = acme.client_for("bob").post(
        f"/api/v1/escalations/{acme_claimed}/responses",
        {"outcome": "approve", "edited_arguments": {"order": 1, "amount": 2}},
        format="json",
    )
    assert answered.status_code == 201
    assert (
        b"".join(  # Acme's own export has the line Globex must not see
            call(acme.agent_key, "GET", f"/api/v1/exports/{export_format}").streaming_content
        ).count(b"\n")
        == 1
    )
    for key in (globex.agent_key, globex.personal_keys["charlie"]):
        response = call(key, "GET", f"/api/v1/exports/{export_format}")
        assert response.status_code == 200
        assert b"".join(response.streaming_content) == b""


@pytest.mark.django_db
def test_other_organizations_evidence_bundle_holds_nothing_of_acme(acme, globex, acme_claimed):
    response = call(
        globex.personal_keys["charlie"],
        "GET",
        "/api/v1/audit/bundle?since=2000-01-01&until=2999-01-01",
    )
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as bundle:
        content = b"".join(bundle.read(name) for name in bundle.namelist())
    assert acme_claimed.encode() not in content
    assert acme.organization.public_id.encode() not in content
    assert globex.organization.public_id.encode() in content


async def wait(
    key: str | None, public_id: str, method: str = "GET", query: str = "?timeout=0"
) -> dict[str, Any]:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    communicator = HttpCommunicator(
        application, method, f"/api/v1/escalations/{public_id}/wait{query}", headers=headers
    )
    response = await communicator.get_response(timeout=5)
    await communicator.wait()
    return {
        "status": response["status"],
        "headers": {name.decode().lower(): value.decode() for name, value in response["headers"]},
        "body": json.loads(response["body"]) if response["body"] else None,
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("route", "method"), sorted(WAIT_BY_ID))
async def test_other_organization_gets_404_from_the_wait_endpoint(acme, globex, route, method):
    created = await sync_to_async(create_escalation)(acme)
    key = globex_key(globex, WAIT_BY_ID[route, method])
    before = await sync_to_async(snapshot)(acme)
    response = await wait(key, created["id"], method)
    unknown = await wait(key, UNKNOWN_ID, method)
    assert response["status"] == 404
    assert response["headers"]["content-type"] == PROBLEM
    assert response["body"] == unknown["body"]
    assert await sync_to_async(snapshot)(acme) == before
    # The same call with Acme's own key finds it, so the 404 above is about the tenant.
    assert (await wait(acme.agent_key, created["id"], method))["status"] == 200


@pytest.mark.django_db(transaction=True)
async def test_the_wait_endpoint_refuses_other_methods(acme):
    created = await sync_to_async(create_escalation)(acme)
    response = await wait(acme.agent_key, created["id"], "POST")
    assert response["status"] == 405
    assert response["headers"]["allow"] == "GET, HEAD"
    assert response["headers"]["content-type"] == PROBLEM


# --- Authentication and scopes ----------------------------------------------------------------


def checksummed(body: str) -> str:
    """A key body with a valid checksum (CRC32 in 6 base62 digits)."""
    return body + encode_base62(zlib.crc32(body.encode()), 6)


def forged_for(plaintext: str) -> str:
    """A well-formed key naming a real key id, with another secret."""
    key_id = plaintext.split("_")[2]
    return checksummed(f"ahk_live_{key_id}_{random_base62(32)}")


def unknown_key() -> str:
    return checksummed(f"ahk_live_{random_base62(12)}_{random_base62(32)}")


def with_typo(plaintext: str, index: int = -1) -> str:
    replacement = "A" if plaintext[index] != "A" else "B"
    index %= len(plaintext)
    return plaintext[:index] + replacement + plaintext[index + 1 :]


def revoked_key(tenant: Tenant) -> str:
    agent = tenant.organization.agents.get()
    issued = api_key_create(organization=tenant.organization, agent=agent, actor=SYSTEM_ACTOR)
    api_key_revoke(api_key=issued.api_key, actor=SYSTEM_ACTOR)
    return issued.plaintext


def expired_key(tenant: Tenant) -> str:
    agent = tenant.organization.agents.get()
    issued = api_key_create(
        organization=tenant.organization, agent=agent, actor=SYSTEM_ACTOR, expires_in_days=1
    )
    ApiKey.objects.filter(pk=issued.api_key.pk).update(expires_at=timezone.now())
    return issued.plaintext


BAD_CREDENTIALS = {
    "missing": lambda t: None,
    "empty-bearer": lambda t: "Bearer",
    "basic-scheme": lambda t: "Basic YWxpY2U6c2VjcmV0",
    "three-words": lambda t: f"Bearer {t.agent_key} extra",
    "not-a-key": lambda t: "Bearer hunter2",
    "typo-in-checksum": lambda t: f"Bearer {with_typo(t.agent_key)}",
    "typo-in-secret": lambda t: f"Bearer {with_typo(t.agent_key, -10)}",
    "truncated": lambda t: f"Bearer {t.agent_key[:-1]}",
    "test-mode-prefix": lambda t: f"Bearer {t.agent_key.replace('ahk_live_', 'ahk_test_')}",
    "forged-secret": lambda t: f"Bearer {forged_for(t.agent_key)}",
    "unknown-key-id": lambda t: f"Bearer {unknown_key()}",
    "revoked": lambda t: f"Bearer {revoked_key(t)}",
    "expired": lambda t: f"Bearer {expired_key(t)}",
    "non-ascii": lambda t: "Bearer ahk_live_ÿÿÿ",
}  # fmt: skip


@pytest.mark.django_db
@pytest.mark.parametrize("credentials", BAD_CREDENTIALS)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/escalations"),
        ("POST", "/api/v1/escalations"),
        ("GET", "/api/v1/escalations/{id}"),
    ],
)
def test_a_bad_key_gets_401_with_www_authenticate(acme, credentials, method, path):
    escalation_id = create_escalation(acme)["id"]
    header = BAD_CREDENTIALS[credentials](acme)
    before = snapshot(acme)
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = api_client(None).generic(
        method,
        path.format(id=escalation_id),
        json.dumps(APPROVAL),
        content_type="application/json",
        **extra,
    )
    assert response.status_code == 401
    assert response["Content-Type"] == PROBLEM
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json()["status"] == 401
    assert response.json()["detail"]
    assert snapshot(acme) == before


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("credentials", "detail"),
    [("revoked", "revoked"), ("expired", "expired"), ("typo-in-checksum", "checksum")],
)
def test_the_401_says_why_the_key_was_refused(acme, credentials, detail):
    header = BAD_CREDENTIALS[credentials](acme)
    response = api_client(None).get("/api/v1/escalations", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert detail in response.json()["detail"]


@pytest.mark.django_db
def test_a_key_with_a_typo_in_its_checksum_is_refused_without_a_database_query(
    acme, django_assert_num_queries
):
    client = api_client(with_typo(acme.agent_key))
    with django_assert_num_queries(0):
        response = client.get("/api/v1/escalations")
    assert response.status_code == 401


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "credentials",
    ["missing", "not-a-key", "typo-in-checksum", "forged-secret", "revoked", "expired"],
)
async def test_the_wait_endpoint_gets_401_with_www_authenticate(acme, credentials):
    created = await sync_to_async(create_escalation)(acme)
    header = await sync_to_async(BAD_CREDENTIALS[credentials])(acme)
    key = header.removeprefix("Bearer ") if header else None
    response = await wait(key, created["id"])
    assert response["status"] == 401
    assert response["headers"]["content-type"] == PROBLEM
    assert response["headers"]["www-authenticate"] == 'Bearer realm="api"'
    assert response["body"]["status"] == 401


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("key", "method", "path", "scope"),
    [
        ("personal", "POST", "/api/v1/escalations", "escalations:write"),
        ("personal", "POST", "/api/v1/escalations/{id}/cancel", "escalations:write"),
        ("personal", "POST", "/api/v1/policies/evaluate", "escalations:write"),
        ("agent", "POST", "/api/v1/escalations/{id}/claim", "responses:write"),
        ("agent", "DELETE", "/api/v1/escalations/{id}/claim", "responses:write"),
        ("agent", "POST", "/api/v1/escalations/{id}/responses", "responses:write"),
        ("write-only", "GET", "/api/v1/escalations", "escalations:read"),
        ("write-only", "GET", "/api/v1/escalations/{id}", "escalations:read"),
    ],
)
def test_a_key_without_the_scope_gets_403_naming_it(acme, key, method, path, scope):
    escalation_id = create_escalation(acme)["id"]
    if key == "write-only":
        agent = acme.organization.agents.get()
        plaintext = api_key_create(
            organization=acme.organization,
            agent=agent,
            actor=SYSTEM_ACTOR,
            scopes=["escalations:write"],
        ).plaintext
    else:
        plaintext = acme.agent_key if key == "agent" else acme.personal_keys["bob"]
    before = snapshot(acme)
    response = call(
        plaintext, method, path.format(id=escalation_id), APPROVAL if method == "POST" else None
    )
    assert response.status_code == 403
    assert response["Content-Type"] == PROBLEM
    assert f"'{scope}'" in response.json()["detail"]
    assert snapshot(acme) == before


@pytest.mark.django_db(transaction=True)
async def test_the_wait_endpoint_needs_the_read_scope(acme):
    created = await sync_to_async(create_escalation)(acme)
    agent = await sync_to_async(acme.organization.agents.get)()
    issued = await sync_to_async(api_key_create)(
        organization=acme.organization,
        agent=agent,
        actor=SYSTEM_ACTOR,
        scopes=["escalations:write"],
    )
    response = await wait(issued.plaintext, created["id"])
    assert response["status"] == 403
    assert response["headers"]["content-type"] == PROBLEM
    assert "'escalations:read'" in response["body"]["detail"]
