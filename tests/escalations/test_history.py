"""The history: every filter, full-text search, keyset cursors, CSV and JSON Lines downloads,
isolation between organizations and bad input, through the API and the console.

Runs on SQLite (FTS5) by default and on PostgreSQL (the generated ``tsvector`` column) when
``DATABASE_URL`` is set.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from escalations import history
from escalations.models import Escalation, Policy
from tenants.models import Agent
from tests.conftest import Tenant, create_escalation

pytestmark = pytest.mark.django_db

LIST = "/api/v1/escalations"
EXPORT = "/api/v1/escalations/export"
QUESTION_SCHEMA = {
    "type": "object",
    "properties": {"carrier": {"enum": ["ground", "express"]}},
    "required": ["carrier"],
}


def _at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def _answer(tenant: Tenant, person: str, public_id: str, **body: Any) -> None:
    response = tenant.client_for(person).post(
        f"/api/v1/escalations/{public_id}/responses", body, format="json"
    )
    assert response.status_code == 201, response.content


def _place(public_id: str, created: str, **fields: Any) -> None:
    """Move an escalation to a known day (and set what the test needs) after the fact."""
    created_at = _at(created)
    updates: dict[str, Any] = {"created_at": created_at, **fields}
    if Escalation.objects.get(public_id=public_id).decided_at is not None:
        updates["decided_at"] = created_at + timedelta(hours=2)
    Escalation.objects.filter(public_id=public_id).update(**updates)


@pytest.fixture
def story(acme: Tenant, globex: Tenant) -> dict[str, str]:
    """Five escalations of Acme, one per way of ending, on five known days, and one of Globex."""
    devops = Agent.objects.create(organization=acme.organization, name="devops-bot")
    policy = Policy.objects.create(
        organization=acme.organization,
        name="Newsletters go out",
        outcome="auto_approve",
        condition='action.name == "send_email"',
    )
    refund = create_escalation(acme)["id"]
    _answer(acme, "bob", refund, outcome="reject", comment="Refunds over $500 need a manager.")
    _place(refund, "2026-01-10T09:00:00")

    question = create_escalation(
        acme,
        kind="question",
        title="Which carrier for the replacement laptop?",
        action=None,
        priority="high",
        context={"reasoning": "Ground may be too slow for Friday."},
        response_schema=QUESTION_SCHEMA,
    )["id"]
    _place(question, "2026-01-20T09:00:00")

    newsletter = create_escalation(
        acme,
        title="Send the spring newsletter",
        action={"name": "send_email", "arguments": {"list": "customers"}},
        context={"reasoning": "Marketing approved the campaign."},
    )["id"]
    _place(newsletter, "2026-02-05T09:00:00")

    branch = create_escalation(
        acme,
        title="Delete branch feature/old",
        action={"name": "delete_branch", "arguments": {"branch": "feature/old"}},
        context={"reasoning": "Stale for months."},
    )["id"]
    _place(
        branch,
        "2026-02-15T09:00:00",
        agent=devops,
        status="expired",
        decided_at=_at("2026-02-16T09:00:00"),
        decided_by={"type": "timeout", "on_timeout": "expire"},
    )

    parcel = create_escalation(
        acme,
        title="Refund $20 to order #77",
        action={"name": "issue_refund", "arguments": {"order": 77, "amount": 20}},
        context={"reasoning": "The parcel arrived damaged."},
    )["id"]
    _answer(acme, "alice", parcel, outcome="approve")
    _place(parcel, "2026-03-01T09:00:00", decision_channel="slack")

    secret = create_escalation(globex, title="Refund the secret globex order")["id"]
    return {
        "refund": refund,
        "question": question,
        "newsletter": newsletter,
        "branch": branch,
        "parcel": parcel,
        "secret": secret,
        "devops": devops.public_id,
        "policy": policy.public_id,
        "bob": acme.members["bob"].public_id,
    }


def _names(story: dict[str, str], results: list[dict[str, Any]]) -> list[str]:
    by_id = {value: name for name, value in story.items()}
    return [by_id.get(item["id"], item["id"]) for item in results]


def _list(tenant: Tenant, story: dict[str, str], query: str) -> list[str]:
    response = tenant.agent_client().get(f"{LIST}?{query.format(**story)}")
    assert response.status_code == 200, response.content
    return _names(story, response.json()["results"])


# --- Filters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["parcel", "branch", "newsletter", "question", "refund"]),
        ("status=rejected", ["refund"]),
        ("status=pending", ["question"]),
        ("kind=question", ["question"]),
        ("priority=high", ["question"]),
        ("agent={devops}", ["branch"]),
        ("policy={policy}", ["newsletter"]),
        ("decided_by=human", ["parcel", "refund"]),
        ("decided_by={bob}", ["refund"]),
        ("decided_by=policy", ["newsletter"]),
        ("decided_by=timeout", ["branch"]),
        ("channel=slack", ["parcel"]),
        ("channel=api", ["refund"]),
        ("created_after=2026-02-05", ["parcel", "branch", "newsletter"]),
        ("created_before=2026-01-20", ["refund"]),
        ("created_after=2026-01-15&created_before=2026-02-10", ["newsletter", "question"]),
        ("decided_after=2026-02-16T09:00:00Z", ["parcel", "branch"]),
        ("decided_before=2026-01-11", ["refund"]),
        ("decided_after=2026-01-01&decided_by=human&channel=slack", ["parcel"]),
    ],
)
def test_every_filter_narrows_the_list(acme, story, query, expected):
    assert _list(acme, story, query) == expected


def test_the_old_filters_still_work(acme, story):
    Escalation.objects.filter(public_id=story["question"]).update(external_id="run_7")
    assert _list(acme, story, "external_id=run_7") == ["question"]
    assert _list(acme, story, "agent=") == []


# --- Search --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("charged twice", ["refund"]),  # context.reasoning
        ("manager", ["refund"]),  # the decision comment, written after the create
        ("issue_refund", ["parcel", "refund"]),  # the action's name
        ("1042", ["refund"]),  # an argument
        ("newsletter", ["newsletter"]),  # the title
        ("refunds", ["parcel", "refund"]),  # stemmed: "Refund" in the titles
        ("damaged parcel", ["parcel"]),  # every word, in any order
        ("carrier laptop", ["question"]),
        ("nothingmatchesthis", []),
        ("secret globex", []),  # another organization's
    ],
)
def test_search_finds_title_reasoning_action_and_comment(acme, story, q, expected):
    response = acme.agent_client().get(LIST, {"q": q})
    assert response.status_code == 200, response.content
    assert _names(story, response.json()["results"]) == expected


def test_search_combines_with_filters(acme, story):
    assert _list(acme, story, "q=refund&status=rejected") == ["refund"]
    assert _list(acme, story, "q=refund&channel=slack&created_after=2026-02-01") == ["parcel"]


def test_search_follows_a_redaction(acme, story):
    """The searchable text is the row's: once a payload is replaced, it is no longer found."""
    Escalation.objects.filter(public_id=story["parcel"]).update(context={"reasoning": "[redacted]"})
    assert _list(acme, story, "q=damaged") == []


@pytest.fixture
def without_fts5(db: Any) -> Iterator[None]:
    """This SQLite as if built without FTS5: migration 0007 left nothing behind (the test's
    transaction brings the table and its triggers back)."""
    if connection.vendor != "sqlite":
        pytest.skip("the substring fallback is SQLite's")
    with connection.cursor() as cursor:
        for name in ("insert", "update", "delete"):
            cursor.execute(f"DROP TRIGGER escalations_escalation_fts_{name}")
        cursor.execute("DROP TABLE escalations_escalation_fts")
    history._fts5_ready.cache_clear()
    yield
    history._fts5_ready.cache_clear()


def test_search_without_fts5_matches_every_word_as_a_substring(acme, without_fts5):
    refund = create_escalation(acme)["id"]
    create_escalation(acme, title="Delete branch feature/old", action=None, kind="question")
    response = acme.agent_client().get(LIST, {"q": "CHARGED twice 1042"})
    assert [item["id"] for item in response.json()["results"]] == [refund]


# --- Cursors -------------------------------------------------------------------------------------


def test_pages_are_stable_while_new_escalations_arrive(acme):
    ids = [create_escalation(acme, external_id=f"run_{n}")["id"] for n in range(7)]
    # Four share one instant: the id breaks the tie.
    Escalation.objects.filter(public_id__in=ids[1:5]).update(created_at=_at("2026-01-01"))
    expected = list(
        Escalation.objects.order_by("-created_at", "-id").values_list("public_id", flat=True)
    )
    client = acme.agent_client()
    first = client.get(LIST, {"limit": 3}).json()
    assert first["previous"] is None
    newcomer = create_escalation(acme)["id"]  # arrives between two page reads
    seen = [item["id"] for item in first["results"]]
    page = first
    while page["next"]:
        page = client.get(page["next"]).json()
        seen.extend(item["id"] for item in page["results"])
    assert seen == expected
    assert newcomer not in seen
    second = client.get(first["next"]).json()
    back = client.get(second["previous"]).json()
    assert [item["id"] for item in back["results"]] == expected[:3]


def test_a_blank_cursor_is_the_first_page(acme):
    ids = [create_escalation(acme, external_id=f"run_{n}")["id"] for n in range(3)]
    page = acme.agent_client().get(LIST, {"limit": 2, "cursor": ""}).json()
    assert [item["id"] for item in page["results"]] == ids[::-1][:2]
    assert page["next"] is not None


def test_a_moment_with_any_iso_offset_is_the_same_instant(acme, story):
    """ISO 8601 offsets run to ±23:59 but PostgreSQL stops at ±15:59: the filter converts to UTC
    first rather than hand the database a moment it refuses with a 500."""
    far_east = _list(acme, story, "decided_after=2026-02-17T04:00:00%2B19:22")
    utc = _list(acme, story, "decided_after=2026-02-16T08:38:00Z")
    assert far_east == utc == ["parcel", "branch"]


def test_a_cursor_keeps_its_filters_in_the_next_link(acme, story):
    page = acme.agent_client().get(LIST, {"limit": 1, "decided_by": "human"}).json()
    assert "decided_by=human" in page["next"]
    rest = acme.agent_client().get(page["next"]).json()
    assert _names(story, rest["results"]) == ["refund"]
    assert rest["next"] is None


# --- Downloads -----------------------------------------------------------------------------------


def _download(client: Any, url: str, params: dict[str, str]) -> tuple[Any, str]:
    response = client.get(url, params)
    assert response.status_code == 200, response.content
    assert response.streaming
    return response, b"".join(response.streaming_content).decode()


def test_csv_download_of_a_filtered_view(acme, story):
    response, text = _download(acme.agent_client(), EXPORT, {"format": "csv", "q": "refund"})
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="acme-escalations.csv"'
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["id"] for row in rows] == [story["parcel"], story["refund"]]
    refund = rows[1]
    assert refund["title"] == "Refund $750 to order #1042"
    assert refund["reasoning"] == "The customer was charged twice."
    assert refund["action"] == "issue_refund"
    assert json.loads(refund["arguments"]) == {"order": 1042, "amount": 750}
    assert refund["status"] == "rejected"
    assert refund["decided_by"] == "user"
    assert refund["decided_by_id"] == story["bob"]
    assert refund["decided_by_name"] == "bob@acme.test"
    assert refund["channel"] == "api"
    assert refund["comment"] == "Refunds over $500 need a manager."
    assert refund["created_at"] == "2026-01-10T09:00:00Z"
    assert refund["url"].endswith(f"/escalations/{story['refund']}/")
    assert rows[0]["channel"] == "slack"


def test_csv_cells_never_start_a_formula(acme):
    create_escalation(acme, title='=HYPERLINK("http://evil.test","x")')
    _, text = _download(acme.agent_client(), EXPORT, {"format": "csv"})
    (row,) = csv.DictReader(io.StringIO(text))
    assert row["title"] == '\'=HYPERLINK("http://evil.test","x")'


def test_jsonl_download_has_one_line_per_escalation(acme, story):
    response, text = _download(acme.agent_client(), EXPORT, {"format": "jsonl"})
    assert response["Content-Type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["id"] for line in lines] == [
        story[name] for name in ("parcel", "branch", "newsletter", "question", "refund")
    ]
    newsletter = lines[2]
    assert newsletter["policy"] == {"id": story["policy"], "name": "Newsletters go out"}
    assert newsletter["decided_by"]["type"] == "policy"
    assert newsletter["action"] == {"name": "send_email", "arguments": {"list": "customers"}}
    assert lines[1]["agent"]["name"] == "devops-bot"
    assert lines[3]["decided_at"] is None


def test_download_walks_every_chunk(acme, monkeypatch):
    """More rows than one keyset chunk: all of them, once each, in order."""
    monkeypatch.setattr("escalations.history.EXPORT_CHUNK", 2)
    ids = [create_escalation(acme)["id"] for _ in range(5)]
    _, text = _download(acme.agent_client(), EXPORT, {"format": "jsonl"})
    assert [json.loads(line)["id"] for line in text.splitlines()] == ids[::-1]


# --- Isolation -----------------------------------------------------------------------------------


def test_another_organizations_escalations_never_appear(acme, globex, story):
    assert story["secret"] not in [
        item["id"] for item in acme.agent_client().get(LIST).json()["results"]
    ]
    _, text = _download(acme.client_for("alice"), EXPORT, {"format": "jsonl"})
    assert story["secret"] not in text
    assert "globex" not in text
    assert _list(globex, story, "") == ["secret"]
    assert _list(globex, story, "q=refund") == ["secret"]
    assert _list(globex, story, "decided_by={bob}") == []
    assert acme.agent_client().get(f"{LIST}/{story['secret']}").status_code == 404
    page = Client()
    page.force_login(acme.members["alice"].user)
    html = page.get("/history/", {"q": "secret"}).content.decode()
    assert story["secret"] not in html


# --- Bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("colour=red", "colour"),
        ("status=bogus", "status"),
        ("status=", "status"),
        ("kind=task", "kind"),
        ("priority=meh", "priority"),
        ("created_after=yesterday", "created_after"),
        ("created_before=2026-13-01", "created_before"),
        ("decided_after=2026-02-30", "decided_after"),
        ("decided_before=soon", "decided_before"),
        ("decided_after=9999-12-31T23:00:00-05:00", "decided_after"),  # past year 9999 in UTC
        ("created_after=0001-01-01T00:00:00%2B05:00", "created_after"),  # before year 1
        ("decided_by=someone", "decided_by"),
        ("channel=pigeon", "channel"),
        ("policy=", "policy"),
        ("q=", "q"),
        ("q=refund%00", "q"),
        ("agent=agt_%00", "agent"),
        ("external_id=%00", "external_id"),
        (f"q={'x' * 201}", "q"),
        ("limit=0", "limit"),
        ("limit=many", "limit"),
        ("cursor=not-a-cursor", "cursor"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(acme, query, field):
    for url in (LIST, f"{EXPORT}?format=csv"):
        joiner = "&" if "?" in url else "?"
        response = acme.agent_client().get(f"{url}{joiner}{query}")
        if url != LIST and field in ("limit", "cursor"):
            continue  # a download has no pages
        assert response.status_code == 400, (url, response.content)
        assert response["Content-Type"] == "application/problem+json"
        assert field in response.json()["errors"]


def test_a_tampered_cursor_is_refused(acme):
    for n in range(3):
        create_escalation(acme, external_id=f"run_{n}")
    cursor = acme.agent_client().get(LIST, {"limit": 1}).json()["next"].split("cursor=")[1]
    forged = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
    response = acme.agent_client().get(LIST, {"limit": 1, "cursor": forged})
    assert response.status_code == 400
    assert "cursor" in response.json()["errors"]


@pytest.mark.parametrize("query", ["", "format=xml"])
def test_a_download_needs_a_known_format(acme, query):
    response = acme.agent_client().get(f"{EXPORT}?{query}")
    assert response.status_code == 400
    assert "format" in response.json()["errors"]


def test_keys_without_the_read_scope_and_strangers_are_refused(acme):
    assert Client().get(LIST).status_code == 401
    assert Client().get(EXPORT, {"format": "csv"}).status_code == 401


def test_the_schema_documents_the_new_parameters(acme):
    schema = acme.agent_client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    listed = {p["name"] for p in schema["paths"]["/api/v1/escalations"]["get"]["parameters"]}
    assert {
        "status",
        "kind",
        "priority",
        "agent",
        "policy",
        "decided_by",
        "channel",
        "created_after",
        "created_before",
        "decided_after",
        "decided_before",
        "q",
        "cursor",
        "limit",
    } <= listed
    export = schema["paths"]["/api/v1/escalations/export"]["get"]
    assert "format" in {p["name"] for p in export["parameters"]}


def test_the_schema_says_what_the_filters_refuse(acme):
    """A client generated from the schema (or a fuzzer) learns the rules the API enforces."""
    schema = acme.agent_client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    parameters = schema["paths"]["/api/v1/escalations"]["get"]["parameters"]
    shapes = {p["name"]: p["schema"] for p in parameters}
    decided_by = re.compile(shapes["decided_by"]["pattern"])
    assert decided_by.search("human") and decided_by.search("mem_a1B2")
    assert not decided_by.search("someone") and not decided_by.search("")
    assert shapes["q"]["minLength"] == shapes["policy"]["minLength"] == 1
    assert shapes["q"]["maxLength"] == history.MAX_QUERY_CHARS
    assert (shapes["limit"]["minimum"], shapes["limit"]["maximum"]) == (1, history.MAX_PAGE_SIZE)


# --- The console ---------------------------------------------------------------------------------


def _console(tenant: Tenant, person: str) -> Client:
    client = Client()
    client.force_login(tenant.members[person].user)
    return client


def test_console_history_filters_from_the_url(acme, story):
    client = _console(acme, "vera")  # a viewer reads the history, as the queue
    page = client.get("/history/", {"status": "rejected", "q": "", "kind": ""})
    assert page.status_code == 200
    html = page.content.decode()
    assert 'aria-current="page">History</a>' in html
    assert story["refund"] in html
    assert story["parcel"] not in html
    assert 'href="/history/export?format=csv&amp;status=rejected"' in html


def test_console_history_pages_with_cursors(acme):
    for n in range(55):
        create_escalation(acme, external_id=f"run_{n}")
    client = _console(acme, "bob")
    html = client.get("/history/").content.decode()
    assert html.count('class="qrow"') == 50
    older = html.split('rel="next"')[0].rsplit('href="?', 1)[1].split('"')[0]
    second = client.get(f"/history/?{older.replace('&amp;', '&')}").content.decode()
    assert second.count('class="qrow"') == 5
    assert 'rel="prev"' in second


def test_console_history_bad_filter_is_a_form_error(acme, story):
    page = _console(acme, "bob").get("/history/", {"created_after": "last tuesday"})
    assert page.status_code == 400
    assert "created_after" in page.content.decode()
    assert 'id="history-errors"' in page.content.decode()


def test_console_download(acme, story):
    response = _console(acme, "bob").get(
        "/history/export", {"format": "csv", "decided_by": "policy", "status": ""}
    )
    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert [row["id"] for row in rows] == [story["newsletter"]]
    bad = _console(acme, "bob").get("/history/export", {"format": "pdf"})
    assert bad.status_code == 400


def test_console_history_needs_a_sign_in(acme):
    assert Client().get("/history/").status_code == 302
    assert Client().get("/history/export", {"format": "csv"}).status_code == 302


def test_audit_log_links_to_the_escalation_with_its_title(acme, story):
    html = _console(acme, "alice").get("/org/audit/", {"target": story["refund"]}).content
    assert f'href="/escalations/{story["refund"]}/"' in html.decode()
    assert "Refund $750 to order #1042" in html.decode()
    other = _console(acme, "alice").get("/org/audit/", {"target": story["secret"]}).content
    assert "secret globex" not in other.decode()
