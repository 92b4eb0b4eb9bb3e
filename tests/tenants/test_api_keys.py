"""API keys: their format, the checksum, what is stored, and which keys are refused."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.services import SYSTEM_ACTOR
from tenants import keycache, keys
from tenants.ids import BASE62
from tenants.models import AGENT_SCOPES, PERSONAL_SCOPES, ApiKey
from tenants.services import api_key_create, api_key_revoke
from tests.conftest import Tenant, api_client

# The pattern the README publishes for secret scanners.
SCANNER = re.compile(r"\bahk_(live|test)_[0-9A-Za-z]{12}_[0-9A-Za-z]{38}\b")

pytestmark = pytest.mark.django_db


def agent_key(tenant: Tenant, **options) -> tuple[ApiKey, str]:
    issued = api_key_create(
        organization=tenant.organization,
        agent=tenant.organization.agents.get(),
        actor=SYSTEM_ACTOR,
        **options,
    )
    return issued.api_key, issued.plaintext


@pytest.mark.parametrize("mode", ["live", "test"])
def test_a_new_key_matches_the_published_scanner_pattern(acme, mode):
    api_key, plaintext = agent_key(acme, mode=mode)
    assert SCANNER.fullmatch(plaintext)
    assert plaintext.startswith(f"ahk_{mode}_{api_key.key_id}_")
    pasted = f'export AWAITHUMAN_KEY="{plaintext}"; curl -H "Authorization: Bearer {plaintext}"'
    assert [match.group(0) for match in SCANNER.finditer(pasted)] == [plaintext, plaintext]


def test_every_generated_key_is_well_formed_and_parses_back():
    # Many keys, so checksums with leading zeros (padded to 6 digits) are among them.
    for mode in ("live", "test"):
        for _ in range(500):
            key_id, plaintext = keys.generate(mode)
            assert SCANNER.fullmatch(plaintext), plaintext
            parsed = keys.parse(plaintext)
            assert (parsed.mode, parsed.key_id) == (mode, key_id)


def test_the_checksum_catches_every_single_character_typo():
    _, plaintext = keys.generate("live")
    start = len("ahk_live_")
    tried = 0
    for index in range(start, len(plaintext)):
        if plaintext[index] == "_":
            continue
        for char in BASE62:
            if char == plaintext[index]:
                continue
            typo = plaintext[:index] + char + plaintext[index + 1 :]
            with pytest.raises(keys.MalformedKey):
                keys.parse(typo)
            tried += 1
    assert tried == (12 + 38) * 61


def test_the_checksum_catches_swapped_neighbours():
    _, plaintext = keys.generate("live")
    for index in range(len("ahk_live_"), len(plaintext) - 1):
        a, b = plaintext[index], plaintext[index + 1]
        if a == b or "_" in (a, b):
            continue
        swapped = plaintext[:index] + b + a + plaintext[index + 2 :]
        with pytest.raises(keys.MalformedKey, match="checksum"):
            keys.parse(swapped)


@pytest.mark.parametrize(
    "text",
    ["", "ahk_live_", "ahk_prod_abc", "sk_live_123", "ahk_live_ABCDEFGHIJKL_short"],
)
def test_text_that_is_not_a_key_is_refused_as_malformed(text):
    with pytest.raises(keys.MalformedKey, match="format"):
        keys.parse(text)


def test_a_mistyped_key_is_refused_with_a_message_about_the_checksum(acme):
    typo = acme.agent_key[:-1] + ("A" if acme.agent_key[-1] != "A" else "B")
    response = api_client(typo).get("/api/v1/escalations")
    assert response.status_code == 401
    assert "checksum" in response.json()["detail"]


def test_only_the_key_id_and_a_sha256_digest_are_stored(acme):
    api_key, plaintext = agent_key(acme)
    secret = plaintext.split("_")[3]
    assert api_key.key_id == plaintext.split("_")[2]
    assert ApiKey.objects.get(pk=api_key.pk).digest == keys.digest_of(plaintext)
    assert len(api_key.digest) == 64
    # No column of any table holds the key or its secret: not the key row, not the audit trail.
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                text = " ".join(map(str, row))
                assert secret not in text, f"the key's secret is stored in {table}"
                assert secret[:16] not in text, f"part of the key's secret is stored in {table}"


def test_the_key_string_of_an_api_key_never_shows_the_secret(acme):
    api_key, plaintext = agent_key(acme)
    assert str(api_key) == f"ahk_live_{api_key.key_id}_…"
    assert plaintext.split("_")[3] not in repr(api_key)


def test_a_revoked_key_is_refused(acme):
    api_key, plaintext = agent_key(acme)
    assert api_client(plaintext).get("/api/v1/escalations").status_code == 200
    api_key_revoke(api_key=api_key, actor=SYSTEM_ACTOR)
    response = api_client(plaintext).get("/api/v1/escalations")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_an_expired_key_is_refused_and_one_about_to_expire_still_works(acme):
    api_key, plaintext = agent_key(acme, expires_in_days=1)
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() + timedelta(minutes=1))
    assert api_client(plaintext).get("/api/v1/escalations").status_code == 200
    # A minute later (a raw UPDATE fires no signal: announce it as the key cache requires).
    ApiKey.objects.filter(pk=api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    keycache.invalidate()
    response = api_client(plaintext).get("/api/v1/escalations")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


@pytest.mark.parametrize("days", [0, -1])
def test_a_key_cannot_be_issued_already_expired(acme, days):
    with pytest.raises(ValueError, match="expires_in_days"):
        agent_key(acme, expires_in_days=days)


def test_agent_keys_get_agent_scopes_and_personal_keys_personal_scopes(acme):
    api_key, _ = agent_key(acme)
    assert set(api_key.scopes) == AGENT_SCOPES
    personal = api_key_create(
        organization=acme.organization, membership=acme.members["bob"], actor=SYSTEM_ACTOR
    ).api_key
    assert set(personal.scopes) == PERSONAL_SCOPES


@pytest.mark.parametrize("scopes", [["responses:write"], ["escalations:read", "responses:write"]])
def test_an_agent_key_can_never_get_responses_write(acme, scopes):
    with pytest.raises(ValueError, match="responses:write"):
        agent_key(acme, scopes=scopes)
    agent_scopes = ApiKey.objects.filter(agent__isnull=False).values_list("scopes", flat=True)
    assert all("responses:write" not in scopes for scopes in agent_scopes)


def test_a_personal_key_can_never_create_escalations(acme):
    with pytest.raises(ValueError, match="escalations:write"):
        api_key_create(
            organization=acme.organization,
            membership=acme.members["bob"],
            actor=SYSTEM_ACTOR,
            scopes=["escalations:write"],
        )


def test_a_key_belongs_to_exactly_one_agent_or_member(acme):
    with pytest.raises(ValueError, match="exactly one"):
        api_key_create(organization=acme.organization, actor=SYSTEM_ACTOR)
    with pytest.raises(ValueError, match="exactly one"):
        api_key_create(
            organization=acme.organization,
            actor=SYSTEM_ACTOR,
            agent=acme.organization.agents.get(),
            membership=acme.members["bob"],
        )


def last_used_updates(queries: CaptureQueriesContext) -> int:
    return sum(
        1
        for query in queries.captured_queries
        if query["sql"].startswith("UPDATE") and "last_used_at" in query["sql"]
    )


def test_last_used_at_is_written_at_most_once_a_minute(acme):
    api_key, plaintext = agent_key(acme)
    client = api_client(plaintext)
    assert api_key.last_used_at is None

    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert client.get("/api/v1/escalations").status_code == 200
    assert last_used_updates(queries) == 1
    first_use = ApiKey.objects.get(pk=api_key.pk).last_used_at
    assert first_use is not None

    # 59 seconds later: still within the minute, no write.
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now() - timedelta(seconds=59))
    keycache.invalidate()  # and the cached row forgotten, as after a minute in a real process
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            client.get("/api/v1/escalations")
    assert last_used_updates(queries) == 0

    # Over a minute later: one write, then quiet again.
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now() - timedelta(seconds=61))
    keycache.invalidate()
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            client.get("/api/v1/escalations")
    assert last_used_updates(queries) == 1
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at > timezone.now() - timedelta(seconds=5)


def test_a_refused_key_does_not_touch_last_used_at(acme):
    api_key, plaintext = agent_key(acme)
    api_key_revoke(api_key=api_key, actor=SYSTEM_ACTOR)
    api_client(plaintext).get("/api/v1/escalations")
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at is None
