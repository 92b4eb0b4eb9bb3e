"""Bad input to the two write endpoints: a 4xx problem that names the field, never a 500, and
nothing written.

Bodies are sent raw through Django's test client, so what reaches the server is exactly the bytes
below (DRF's ``APIClient`` would re-encode them). Every case must also hold on PostgreSQL, whose
jsonb refuses ``\\u0000`` and ``Infinity``: the parser refuses them before they get that far.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from channels.testing import HttpCommunicator
from django.conf import settings
from django.test import Client

from audit.models import AuditEvent
from awaithuman.asgi import application
from escalations.models import Escalation, IdempotencyRecord, Response
from escalations.serializers import MAX_TIMEOUT_SECONDS
from tests.conftest import APPROVAL, create_escalation

pytestmark = pytest.mark.django_db

CREATE = "/api/v1/escalations"
PROBLEM = "application/problem+json"


def post_raw(key: str, path: str, body: bytes | str, content_type: str = "application/json") -> Any:
    return Client().post(
        path, data=body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {key}"
    )


def post_json(key: str, path: str, body: Any) -> Any:
    return post_raw(key, path, json.dumps(body))


def rows() -> dict[str, int]:
    return {
        "escalations": Escalation.objects.count(),
        "responses": Response.objects.count(),
        "audit_events": AuditEvent.objects.count(),
        "idempotency_records": IdempotencyRecord.objects.count(),
    }


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    problem = response.json()
    assert problem["status"] == status
    assert problem["detail"]
    if field is not None:
        assert field in problem.get("errors", {}), problem
    return problem


def with_field(field: str, value: Any) -> dict[str, Any]:
    """APPROVAL with one (possibly dotted) field replaced."""
    body = json.loads(json.dumps(APPROVAL))
    *parents, name = field.split(".")
    target = body
    for parent in parents:
        target = target[parent]
    target[name] = value
    return body


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def create_with(members: str) -> str:
    """A raw create body: a valid kind and title, then ``members`` as written."""
    return '{"kind": "approval", "title": "x", ' + members + "}"


# Raw bodies that are not acceptable JSON at all: (id, body, expected status).
UNPARSEABLE = [
    ("malformed", '{"kind": "approval", "title": ', 400),
    ("trailing-garbage", '{"kind": "approval", "title": "x"} x', 400),
    ("single-quotes", "{'kind': 'approval'}", 400),
    ("invalid-utf8", b'{"kind": "approval", "title": "\xff\xfe"}', 400),
    ("whitespace-only", "   \n ", 400),
    ("objects-10000-deep", create_with('"metadata": ' + nested(10_000)), 400),
    (
        "arrays-10000-deep",
        create_with('"metadata": {"a": ' + "[" * 10_000 + "]" * 10_000 + "}"),
        400,
    ),
    ("objects-40-deep", create_with('"metadata": ' + nested(40)), 400),
    ("nul-in-string", '{"kind": "approval", "title": "Refund\\u0000 now"}', 400),
    ("nul-in-nested-string", create_with('"context": {"reasoning": "\\u0000"}'), 400),
    ("nul-in-key", create_with('"metadata": {"run\\u0000id": 1}'), 400),
    ("raw-nul-byte", b'{"kind": "approval", "title": "a\x00b"}', 400),
    ("lone-surrogate", '{"kind": "approval", "title": "x\\ud800y"}', 400),
    ("lone-surrogate-in-key", create_with('"metadata": {"\\udfff": 1}'), 400),
    ("number-1e400", create_with('"metadata": {"n": 1e400}'), 400),
    ("number-minus-1e400", create_with('"metadata": {"n": -1e400}'), 400),
    ("NaN", create_with('"metadata": {"n": NaN}'), 400),
    ("Infinity", create_with('"metadata": {"n": Infinity}'), 400),
    ("minus-Infinity", create_with('"metadata": {"n": -Infinity}'), 400),
    ("5000-digit-integer", create_with('"metadata": {"n": ' + "9" * 5000 + "}"), 400),
    ("5000-digit-timeout", create_with('"timeout_seconds": ' + "9" * 5000), 400),
]


@pytest.mark.parametrize(
    ("body", "status"), [c[1:] for c in UNPARSEABLE], ids=[c[0] for c in UNPARSEABLE]
)
def test_create_refuses_a_body_that_is_not_acceptable_json(acme, body, status):
    before = rows()
    problem = assert_problem(post_raw(acme.agent_key, CREATE, body), status)
    assert problem["type"].endswith("/malformed-request")
    assert rows() == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_create_refuses_a_body_that_is_not_json_with_415(acme, content_type):
    before = rows()
    problem = assert_problem(
        post_raw(acme.agent_key, CREATE, json.dumps(APPROVAL), content_type), 415
    )
    assert content_type in problem["detail"]
    assert "Content-Type: application/json" in problem["detail"]
    assert rows() == before


def test_create_with_an_empty_body_names_the_required_fields(acme):
    problem = assert_problem(post_raw(acme.agent_key, CREATE, b""), 400)
    assert {"kind", "title"} <= set(problem["errors"])
    assert rows()["escalations"] == 0


def test_create_refuses_a_body_over_one_mebibyte_and_names_the_limit(acme):
    limit = settings.API_MAX_BODY_BYTES
    assert limit == 1024 * 1024
    body = json.dumps({**APPROVAL, "metadata": {"padding": "x" * limit}})
    before = rows()
    problem = assert_problem(post_raw(acme.agent_key, CREATE, body), 413)
    assert str(limit) in problem["detail"]
    assert problem["limit_bytes"] == limit
    assert rows() == before


def test_a_body_just_under_the_limit_is_accepted(acme):
    body = json.dumps({**APPROVAL, "metadata": {"padding": ""}})
    padding = settings.API_MAX_BODY_BYTES - len(body.encode())
    body = json.dumps({**APPROVAL, "metadata": {"padding": "x" * padding}})
    assert len(body.encode()) == settings.API_MAX_BODY_BYTES
    assert post_raw(acme.agent_key, CREATE, body).status_code == 201


@pytest.mark.parametrize("body", [[], [APPROVAL], "approval", 42, None, True])
def test_create_refuses_a_body_that_is_not_an_object(acme, body):
    before = rows()
    assert_problem(post_json(acme.agent_key, CREATE, body), 400, "body")
    assert rows() == before


# (field, bad value): every field of the create body, with the wrong type or an invalid value.
INVALID_FIELDS = [
    ("kind", None), ("kind", 1), ("kind", "maybe"), ("kind", ["approval"]),
    ("title", None), ("title", ""), ("title", "   "), ("title", 123), ("title", 1.5),
    ("title", True), ("title", ["Refund"]), ("title", {"text": "Refund"}), ("title", "x" * 301),
    ("action", "issue_refund"), ("action", ["issue_refund"]), ("action", 5),
    ("action.name", None), ("action.name", ""), ("action.name", 5), ("action.name", ["x"]),
    ("action.name", "x" * 201),
    ("action.arguments", [1, 2]), ("action.arguments", "amount=750"), ("action.arguments", 750),
    ("context", "The customer was charged twice."), ("context", []), ("context", 1),
    ("context.reasoning", 5), ("context.reasoning", ["a"]), ("context.reasoning", {"a": 1}),
    ("context.tool_calls", "lookup_order"), ("context.tool_calls", {"name": "x"}),
    ("context.messages", "hello"), ("context.messages", 3),
    ("response_schema", "object"), ("response_schema", []), ("response_schema", 1),
    ("response_schema", {"type": "not-a-type"}),
    ("response_schema", {"type": "string", "minLength": -1}),
    ("response_schema", {"properties": []}),
    ("priority", "whenever"), ("priority", 1), ("priority", None),
    ("timeout_seconds", 0), ("timeout_seconds", -5), ("timeout_seconds", MAX_TIMEOUT_SECONDS + 1),
    ("timeout_seconds", "60"), ("timeout_seconds", "soon"), ("timeout_seconds", 1e30),
    ("timeout_seconds", 1.5), ("timeout_seconds", True), ("timeout_seconds", None),
    ("timeout_seconds", [60]),
    ("on_timeout", "never"), ("on_timeout", 1), ("on_timeout", None),
    ("callback_url", "not a url"), ("callback_url", "ftp://hooks.example.com/x"),
    ("callback_url", "javascript:alert(1)"), ("callback_url", "file:///etc/passwd"),
    ("callback_url", 5), ("callback_url", ["https://hooks.example.com"]),
    ("callback_url", "https://hooks.example.com/" + "x" * 2000),
    ("external_id", 42), ("external_id", ["run_42"]), ("external_id", "x" * 201),
    ("metadata", []), ("metadata", "x"), ("metadata", 1),
]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), INVALID_FIELDS, ids=lambda v: repr(v)[:30])
def test_create_refuses_an_invalid_field_and_names_it(acme, field, value):
    before = rows()
    problem = assert_problem(
        post_json(acme.agent_key, CREATE, with_field(field, value)), 400, field
    )
    assert problem["type"].endswith("/validation-error")
    assert field in problem["detail"]
    assert rows() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**APPROVAL, "titel": "typo"}, "titel"),
        ({**APPROVAL, "timeout": 60}, "timeout"),
        ({**APPROVAL, "action": {"name": "issue_refund", "args": {}}}, "action.args"),
    ],
)
def test_create_refuses_unknown_fields_by_name(acme, body, field):
    before = rows()
    assert_problem(post_json(acme.agent_key, CREATE, body), 400, field)
    assert rows() == before


def test_an_action_without_a_name_names_action_name(acme):
    body = {**APPROVAL, "action": {"arguments": {"amount": 750}}}
    assert_problem(post_json(acme.agent_key, CREATE, body), 400, "action.name")
    assert rows()["escalations"] == 0


def test_a_question_cannot_be_approved_on_timeout(acme):
    body = {"kind": "question", "title": "Which plan?", "on_timeout": "approve"}
    assert_problem(post_json(acme.agent_key, CREATE, body), 400, "on_timeout")
    assert rows()["escalations"] == 0


def test_several_bad_fields_are_all_named_at_once(acme):
    body = {**APPROVAL, "title": "", "priority": "whenever", "colour": "red"}
    problem = assert_problem(post_json(acme.agent_key, CREATE, body), 400)
    assert {"title", "priority", "colour"} <= set(problem["errors"])


def test_free_form_context_and_metadata_are_kept_as_sent(acme):
    created = create_escalation(
        acme,
        context={"reasoning": "r", "scratchpad": {"step": 1}},
        metadata={"run": "r_1", "nested": {"deep": [1, 2, {"x": None}]}},
    )
    assert created["context"]["scratchpad"] == {"step": 1}
    assert created["metadata"]["nested"] == {"deep": [1, 2, {"x": None}]}


# --- POST /api/v1/escalations/{id}/responses ------------------------------------------------


@pytest.fixture
def pending(acme) -> str:
    """A pending approval in Acme; returns its responses URL."""
    return f"/api/v1/escalations/{create_escalation(acme)['id']}/responses"


def assert_still_pending(url: str) -> None:
    public_id = url.split("/")[-2]
    escalation = Escalation.objects.get(public_id=public_id)
    assert escalation.status == "pending"
    assert not escalation.responses.exists()


@pytest.mark.parametrize(
    ("body", "status"), [c[1:] for c in UNPARSEABLE], ids=[c[0] for c in UNPARSEABLE]
)
def test_responses_refuse_a_body_that_is_not_acceptable_json(acme, pending, body, status):
    before = rows()
    assert_problem(post_raw(acme.personal_keys["bob"], pending, body), status)
    assert rows() == before
    assert_still_pending(pending)


def test_responses_refuse_a_body_that_is_not_json_with_415(acme, pending):
    before = rows()
    assert_problem(
        post_raw(
            acme.personal_keys["bob"],
            pending,
            "outcome=approve",
            "application/x-www-form-urlencoded",
        ),
        415,
    )
    assert rows() == before
    assert_still_pending(pending)


def test_responses_refuse_a_body_over_one_mebibyte(acme, pending):
    body = json.dumps({"outcome": "approve", "comment": "x" * settings.API_MAX_BODY_BYTES})
    before = rows()
    problem = assert_problem(post_raw(acme.personal_keys["bob"], pending, body), 413)
    assert str(settings.API_MAX_BODY_BYTES) in problem["detail"]
    assert rows() == before


def test_responses_with_an_empty_body_name_the_outcome(acme, pending):
    assert_problem(post_raw(acme.personal_keys["bob"], pending, b""), 400, "outcome")
    assert_still_pending(pending)


INVALID_ANSWERS = [
    ({}, "outcome"),
    ({"outcome": None}, "outcome"),
    ({"outcome": 1}, "outcome"),
    ({"outcome": "maybe"}, "outcome"),
    ({"outcome": "answer"}, "outcome"),  # an approval takes approve or reject
    ({"outcome": ["approve"]}, "outcome"),
    ({"outcome": "approve", "comment": 5}, "comment"),
    ({"outcome": "approve", "comment": ["ok"]}, "comment"),
    ({"outcome": "approve", "comment": "x" * 10_001}, "comment"),
    ({"outcome": "approve", "response": "yes"}, "response"),
    ({"outcome": "approve", "response": [1]}, "response"),
    ({"outcome": "approve", "edited_arguments": [1, 2]}, "edited_arguments"),
    ({"outcome": "approve", "edited_arguments": "amount=500"}, "edited_arguments"),
    ({"outcome": "reject", "edited_arguments": {"amount": 500}}, "edited_arguments"),
    ({"outcome": "approve", "approved": True}, "approved"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_ANSWERS, ids=lambda v: repr(v)[:40])
def test_responses_refuse_an_invalid_answer_and_name_the_field(acme, pending, body, field):
    before = rows()
    assert_problem(post_json(acme.personal_keys["bob"], pending, body), 400, field)
    assert rows() == before
    assert_still_pending(pending)


def test_edited_arguments_are_refused_on_an_escalation_without_an_action(acme):
    created = create_escalation(acme, kind="question", title="Which plan?", action=None)
    url = f"/api/v1/escalations/{created['id']}/responses"
    body = {"outcome": "answer", "response": {"answer": "pro"}, "edited_arguments": {"a": 1}}
    before = rows()
    assert_problem(post_json(acme.personal_keys["bob"], url, body), 400, "edited_arguments")
    assert rows() == before


def test_an_answer_that_misses_the_schema_names_the_missing_field(acme):
    created = create_escalation(acme, kind="question", title="Which plan?", action=None)
    url = f"/api/v1/escalations/{created['id']}/responses"
    before = rows()
    problem = assert_problem(post_json(acme.personal_keys["bob"], url, {"outcome": "answer"}), 400)
    assert any(name.startswith("response") for name in problem["errors"])
    assert rows() == before


# --- Ids in the path that cannot be an escalation's ------------------------------------------

IMPOSSIBLE_IDS = ["%00", "esc_%00abc", "esc_" + "x" * 5000, "%F0%9F%98%80", "esc_a%20b", "agt_abc"]
BY_ID = [
    ("GET", "", "agent"),
    ("POST", "/cancel", "agent"),
    ("POST", "/claim", "personal"),
    ("DELETE", "/claim", "personal"),
    ("POST", "/responses", "personal"),
]


@pytest.mark.parametrize("public_id", IMPOSSIBLE_IDS, ids=lambda v: v[:12])
@pytest.mark.parametrize(("method", "suffix", "key"), BY_ID)
def test_an_id_that_cannot_exist_is_404_never_500(acme, public_id, method, suffix, key):
    plaintext = acme.agent_key if key == "agent" else acme.personal_keys["bob"]
    body = json.dumps({"outcome": "approve"}) if suffix == "/responses" else ""
    response = Client().generic(
        method,
        f"/api/v1/escalations/{public_id}{suffix}",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {plaintext}",
    )
    assert_problem(response, 404)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("public_id", IMPOSSIBLE_IDS, ids=lambda v: v[:12])
async def test_an_id_that_cannot_exist_is_404_from_the_wait_endpoint(acme, public_id):
    communicator = HttpCommunicator(
        application,
        "GET",
        f"/api/v1/escalations/{public_id}/wait?timeout=0",
        headers=[(b"authorization", f"Bearer {acme.agent_key}".encode())],
    )
    response = await communicator.get_response(timeout=5)
    await communicator.wait()
    assert response["status"] == 404
    assert json.loads(response["body"])["status"] == 404
