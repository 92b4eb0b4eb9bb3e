"""Fine-tuning exports: JSON Lines in OpenAI's chat and preference formats and a plain decisions
format, each line validated against the documented shape; never another organization's data."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import jsonschema
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.conftest import Tenant, create_escalation

pytestmark = pytest.mark.django_db

MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"enum": ["system", "user", "assistant"]},
        "content": {"type": "string"},
    },
    "additionalProperties": False,
}
TOOL_CALL = {
    "type": "object",
    "required": ["id", "type", "function"],
    "properties": {
        "id": {"type": "string"},
        "type": {"const": "function"},
        "function": {
            "type": "object",
            "required": ["name", "arguments"],
            "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}
CHAT = {
    "type": "object",
    "required": ["messages", "tools", "parallel_tool_calls"],
    "properties": {
        "messages": {
            "type": "array",
            "minItems": 2,
            "prefixItems": [MESSAGE],
            "items": {
                "anyOf": [
                    MESSAGE,
                    {
                        "type": "object",
                        "required": ["role", "tool_calls"],
                        "properties": {
                            "role": {"const": "assistant"},
                            "tool_calls": {"type": "array", "items": TOOL_CALL, "minItems": 1},
                        },
                        "additionalProperties": False,
                    },
                ]
            },
        },
        "tools": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "function"],
                "properties": {
                    "type": {"const": "function"},
                    "function": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}},
                    },
                },
            },
        },
        "parallel_tool_calls": {"type": "boolean"},
    },
    "additionalProperties": False,
}
ASSISTANT_TEXT = {
    "type": "array",
    "minItems": 1,
    "maxItems": 1,
    "items": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
        "additionalProperties": False,
    },
}
PREFERENCE = {
    "type": "object",
    "required": ["input", "preferred_output", "non_preferred_output"],
    "properties": {
        "input": {
            "type": "object",
            "required": ["messages"],
            "properties": {"messages": {"type": "array", "items": MESSAGE, "minItems": 1}},
            "additionalProperties": False,
        },
        "preferred_output": ASSISTANT_TEXT,
        "non_preferred_output": ASSISTANT_TEXT,
    },
    "additionalProperties": False,
}
DECISION = {
    "type": "object",
    "required": [
        "id",
        "agent",
        "kind",
        "title",
        "context",
        "proposed_action",
        "approved_action",
        "outcome",
        "response",
        "edited_arguments",
        "comment",
        "decided_by",
        "decided_at",
        "channel",
        "created_at",
    ],
    "properties": {
        "id": {"type": "string", "pattern": "^esc_"},
        "kind": {"enum": ["approval", "question"]},
        "title": {"type": "string"},
        "response": {"type": ["object", "array", "string", "number", "boolean", "null"]},
        "channel": {"type": "string"},
        "agent": {"type": "object", "required": ["id", "name"]},
        "outcome": {"enum": ["approved", "rejected", "answered", "expired", "cancelled"]},
        "context": {"type": "object"},
        "proposed_action": {"type": ["object", "null"]},
        "approved_action": {"type": ["object", "null"]},
        "edited_arguments": {"type": ["object", "null"]},
        "comment": {"type": "string"},
        "decided_by": {"type": "object", "required": ["type"]},
        "decided_at": {"type": "string", "format": "date-time"},
        "created_at": {"type": "string", "format": "date-time"},
    },
    "additionalProperties": False,
}
SCHEMAS = {"chat": CHAT, "preference": PREFERENCE, "decisions": DECISION}


def answer(tenant: Tenant, escalation_id: str, **body: Any) -> None:
    response = tenant.client_for("bob" if "bob" in tenant.members else "dana").post(
        f"/api/v1/escalations/{escalation_id}/responses", body, format="json"
    )
    assert response.status_code == 201, response.content


def export(tenant: Tenant, export_format: str, **query: str) -> list[dict[str, Any]]:
    response = tenant.agent_client().get(f"/api/v1/exports/{export_format}", query)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/x-ndjson"
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    assert text == "" or text.endswith("\n")
    lines = [json.loads(line) for line in text.splitlines()]
    validator = jsonschema.Draft202012Validator(
        SCHEMAS[export_format], format_checker=jsonschema.FormatChecker()
    )
    for line in lines:
        validator.validate(line)
    return lines


@pytest.fixture
def decided(acme: Tenant, globex: Tenant) -> dict[str, str]:
    """Acme: an edited approval, a plain approval, a commented rejection, a bare rejection, one
    still pending. Globex: one approval of its own, with its own secret."""
    ids = {
        "edited": create_escalation(acme)["id"],
        "approved": create_escalation(
            acme, action={"name": "send_email", "arguments": {"to": "a@b.c"}}
        )["id"],
        "rejected": create_escalation(acme)["id"],
        "bare": create_escalation(acme)["id"],
        "pending": create_escalation(acme)["id"],
    }
    answer(acme, ids["edited"], outcome="approve", edited_arguments={"order": 1042, "amount": 500})
    answer(acme, ids["approved"], outcome="approve")
    answer(acme, ids["rejected"], outcome="reject", comment="Already refunded on Monday.")
    answer(acme, ids["bare"], outcome="reject")
    theirs = create_escalation(
        globex,
        context={"messages": [{"role": "user", "content": "GLOBEX-SECRET"}]},
    )["id"]
    answer(globex, theirs, outcome="approve", edited_arguments={"order": 7, "amount": 1})
    ids["globex"] = theirs
    return ids


def test_chat_export_holds_each_human_approval_with_its_edits_applied(acme, decided):
    lines = export(acme, "chat")

    assert len(lines) == 2
    calls = [line["messages"][-1]["tool_calls"][0] for line in lines]
    assert [call["function"]["name"] for call in calls] == ["issue_refund", "send_email"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"order": 1042, "amount": 500}
    assert calls[0]["id"] == f"call_{decided['edited']}"
    assert lines[0]["messages"][0] == {"role": "user", "content": "I was charged twice!"}


def test_preference_export_pairs_edits_and_commented_rejections(acme, decided):
    edited, rejected = export(acme, "preference")

    assert json.loads(edited["preferred_output"][0]["content"]) == {
        "name": "issue_refund",
        "arguments": {"order": 1042, "amount": 500},
    }
    assert json.loads(edited["non_preferred_output"][0]["content"]) == {
        "name": "issue_refund",
        "arguments": {"order": 1042, "amount": 750},
    }
    assert rejected["preferred_output"][0]["content"] == "Already refunded on Monday."
    assert json.loads(rejected["non_preferred_output"][0]["content"])["arguments"]["amount"] == 750
    assert edited["input"]["messages"] == [{"role": "user", "content": "I was charged twice!"}]


def test_decisions_export_holds_every_decision_with_who_and_when(acme, decided):
    lines = export(acme, "decisions")

    by_id = {line["id"]: line for line in lines}
    assert set(by_id) == {decided[name] for name in ("edited", "approved", "rejected", "bare")}
    edited = by_id[decided["edited"]]
    assert edited["outcome"] == "approved"
    assert edited["edited_arguments"] == {"order": 1042, "amount": 500}
    assert edited["approved_action"]["arguments"] == {"order": 1042, "amount": 500}
    assert edited["proposed_action"]["arguments"]["amount"] == 750
    assert edited["decided_by"]["type"] == "user"
    assert by_id[decided["rejected"]]["comment"] == "Already refunded on Monday."


def test_exports_filter_by_agent_action_outcome_and_date(acme, decided):
    agent_id = acme.organization.agents.get().public_id
    assert len(export(acme, "decisions", agent=agent_id)) == 4
    assert export(acme, "decisions", agent="agt_someoneelse") == []
    assert [line["id"] for line in export(acme, "decisions", action="send_email")] == [
        decided["approved"]
    ]
    assert {line["id"] for line in export(acme, "decisions", outcome="rejected")} == {
        decided["rejected"],
        decided["bare"],
    }
    assert len(export(acme, "chat", since="2000-01-01")) == 2
    assert export(acme, "chat", until="2000-01-01") == []
    assert export(acme, "decisions", since="2999-01-01T00:00:00Z") == []


@pytest.mark.parametrize("export_format", ["chat", "preference", "decisions"])
def test_another_organizations_decisions_never_appear(acme, globex, decided, export_format):
    response = acme.agent_client().get(f"/api/v1/exports/{export_format}")
    text = b"".join(response.streaming_content).decode()

    assert "GLOBEX-SECRET" not in text
    assert decided["globex"] not in text
    assert (
        "GLOBEX-SECRET"
        in b"".join(
            globex.agent_client().get(f"/api/v1/exports/{export_format}").streaming_content
        ).decode()
    )


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"since": "last tuesday"}, "since"),
        ({"until": "2026-13-45"}, "until"),
        ({"until": ""}, "until"),
        ({"outcome": ""}, "outcome"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_filter_is_a_400_naming_the_field(acme, query, field):
    response = acme.agent_client().get("/api/v1/exports/chat", query)

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert list(response.json()["errors"]) == [field]


def test_an_unknown_format_is_a_404(acme):
    assert acme.agent_client().get("/api/v1/exports/csv").status_code == 404


def test_the_command_writes_the_same_lines_as_the_api(acme, decided, tmp_path):
    stdout = StringIO()
    call_command("export_decisions", "--org", "acme", "--format", "preference", stdout=stdout)
    output = tmp_path / "chat.jsonl"
    call_command("export_decisions", "--org", "acme", "--format", "chat", "--output", str(output))

    assert [json.loads(line) for line in stdout.getvalue().splitlines()] == export(
        acme, "preference"
    )
    assert [json.loads(line) for line in output.read_text().splitlines()] == export(acme, "chat")
    with pytest.raises(CommandError, match="outcome"):
        call_command("export_decisions", "--org", "acme", "--format", "chat", "--outcome", "x")
    with pytest.raises(CommandError, match="no organization"):
        call_command("export_decisions", "--org", "nope", "--format", "chat")
