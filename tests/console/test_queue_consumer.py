"""The live queue's websocket, against the real ASGI application (origin check, session auth,
per-organization groups, membership re-checks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client

from awaithuman.asgi import application
from escalations.consumers import CLOSE_REMOVED, CLOSE_UNAUTHENTICATED, memberships
from escalations.live import organization_group
from tests.conftest import Tenant, create_escalation

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://testserver")
HOST = (b"host", b"testserver")


@pytest.fixture(autouse=True)
def _fresh_membership_cache() -> Iterator[None]:
    # Transactional tests reuse primary keys; a cache from an earlier test must not answer.
    memberships.clear()
    yield
    memberships.clear()


def _session_cookie(tenant: Tenant, name: str) -> bytes:
    client = Client()
    client.force_login(tenant.members[name].user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def socket(
    tenant: Tenant | None,
    name: str = "",
    origin: tuple[bytes, bytes] | None = ORIGIN,
    cookie: bytes | None = None,
    host: tuple[bytes, bytes] = HOST,
) -> WebsocketCommunicator:
    headers = [host, origin] if origin else [host]
    if cookie is None and tenant is not None:
        cookie = await sync_to_async(_session_cookie)(tenant, name)
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/queue/", headers=headers)


async def connected(tenant: Tenant, name: str) -> WebsocketCommunicator:
    communicator = await socket(tenant, name)
    ok, code = await communicator.connect()
    assert ok, code
    return communicator


async def next_frame(communicator: WebsocketCommunicator, event: str) -> dict[str, Any]:
    """The next frame for ``event`` (the same commit may emit several events)."""
    while True:
        frame = await communicator.receive_json_from(timeout=3)
        if frame.get("event") == event:
            return frame


async def test_anonymous_is_refused(acme):
    ok, code = await (await socket(None)).connect()
    assert not ok
    assert code == CLOSE_UNAUTHENTICATED


async def test_a_foreign_origin_is_refused(acme):
    ok, _ = await (await socket(acme, "bob", origin=(b"origin", b"https://evil.example"))).connect()
    assert not ok


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        (b"http://testserver:8001", b"testserver"),  # another port of this host
        (b"http://testserver", b"testserver:8000"),
        (b"http://testserver:8000", b"testserver:8001"),
        (b"https://testserver", b"testserver"),  # another scheme
        (b"http://evil.example", b"evil.example"),  # a host name we do not serve
    ],
)
async def test_an_origin_must_match_scheme_host_and_port_exactly(acme, origin, host):
    communicator = await socket(acme, "bob", origin=(b"origin", origin), host=(b"host", host))
    ok, _ = await communicator.connect()
    assert not ok


@pytest.mark.parametrize(
    ("origin", "host", "extra"),
    [
        (b"http://testserver:8000", b"testserver:8000", []),
        (b"http://testserver", b"testserver:80", []),
        (b"https://testserver", b"testserver", [(b"x-forwarded-proto", b"https")]),
        (b"http://127.0.0.1:8000", b"127.0.0.1:9000", []),  # CSRF_TRUSTED_ORIGINS lists it
    ],
)
async def test_the_sites_own_origin_and_trusted_origins_are_accepted(
    acme, settings, origin, host, extra
):
    settings.CSRF_TRUSTED_ORIGINS = ["http://127.0.0.1:8000"]
    communicator = await socket(acme, "bob", origin=(b"origin", origin), host=(b"host", host))
    communicator.scope["headers"] += extra
    ok, code = await communicator.connect()
    assert ok, code
    await communicator.disconnect()


async def test_a_missing_origin_is_refused(acme):
    ok, _ = await (await socket(acme, "bob", origin=None)).connect()
    assert not ok


async def test_sync_answers_with_a_snapshot_of_the_pending_queue(acme, globex):
    mine = await sync_to_async(create_escalation)(acme, title="Ours", priority="high")
    await sync_to_async(create_escalation)(globex, title="Theirs")
    communicator = await connected(acme, "vera")  # viewers watch the queue too
    await communicator.send_json_to({"type": "sync"})
    snapshot = await communicator.receive_json_from(timeout=3)
    assert snapshot["type"] == "snapshot"
    assert snapshot["seq"] > 0
    assert [row["id"] for row in snapshot["escalations"]] == [mine["id"]]
    assert snapshot["escalations"][0]["priority"] == "high"
    await communicator.disconnect()


async def test_member_receives_created_claimed_and_decided_frames(acme):
    communicator = await connected(acme, "bob")

    created = await sync_to_async(create_escalation)(acme, title="Refund")
    frame = await next_frame(communicator, "created")
    assert frame["type"] == "escalation"
    assert frame["escalation"]["id"] == created["id"]
    assert frame["escalation"]["status"] == "pending"
    assert frame["escalation"]["title"] == "Refund"
    first_seq = frame["seq"]

    alice = acme.client_for("alice")
    await sync_to_async(alice.post)(f"/api/v1/escalations/{created['id']}/claim")
    frame = await next_frame(communicator, "claimed")
    assert frame["escalation"]["claimed_by"] == "alice@acme.test"
    assert frame["seq"] > first_seq

    await sync_to_async(alice.post)(
        f"/api/v1/escalations/{created['id']}/responses", {"outcome": "approve"}, format="json"
    )
    frame = await next_frame(communicator, "decided")
    assert frame["escalation"]["status"] == "approved"
    assert frame["escalation"]["claimed_by"] is None
    await communicator.disconnect()


async def test_another_organizations_events_are_never_received(acme, globex):
    communicator = await connected(acme, "bob")
    created = await sync_to_async(create_escalation)(globex)
    await sync_to_async(globex.client_for("charlie").post)(
        f"/api/v1/escalations/{created['id']}/claim"
    )
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()


async def test_membership_removed_closes_that_members_sockets_only(acme):
    bob = await connected(acme, "bob")
    alice = await connected(acme, "alice")
    await get_channel_layer().group_send(
        organization_group(acme.organization.public_id),
        {"type": "membership.removed", "membership": acme.members["bob"].public_id},
    )
    assert await bob.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_REMOVED}
    # Alice stays connected and keeps receiving.
    await sync_to_async(create_escalation)(acme)
    assert (await next_frame(alice, "created"))["type"] == "escalation"
    await alice.disconnect()


async def test_a_member_removed_without_notice_is_dropped_at_the_next_event(acme):
    bob = await connected(acme, "bob")
    await sync_to_async(acme.members["bob"].delete)()
    memberships.clear()  # as if the few seconds of the cache had passed
    await sync_to_async(create_escalation)(acme)
    assert await bob.receive_output(timeout=3) == {"type": "websocket.close", "code": CLOSE_REMOVED}


async def test_a_signed_in_person_without_membership_is_refused(acme):
    communicator = await socket(acme, "bob")
    await sync_to_async(acme.members["bob"].delete)()
    ok, code = await communicator.connect()
    assert not ok
    assert code == CLOSE_REMOVED


def _add_confirmed_totp_device(tenant: Tenant, name: str) -> None:
    tenant.members[name].user.totpdevice_set.create(name="phone", confirmed=True)


async def test_a_session_that_owes_its_second_factor_is_refused(acme):
    """Password alone is not a sign-in for someone with two-factor: the pages would send them to
    the verify step, and the websocket must not stream the queue to them either."""
    await sync_to_async(_add_confirmed_totp_device)(acme, "bob")
    ok, code = await (await socket(acme, "bob")).connect()
    assert not ok
    assert code == CLOSE_REMOVED


def _sign_in(tenant: Tenant, name: str) -> Client:
    client = Client()
    client.force_login(tenant.members[name].user)
    return client


def _cookie(client: Client) -> bytes:
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_signing_out_closes_every_socket_of_that_session_only(acme):
    session = await sync_to_async(_sign_in)(acme, "bob")
    other_session = await sync_to_async(_sign_in)(acme, "bob")
    first, second, other = [
        await socket(acme, cookie=_cookie(client)) for client in (session, session, other_session)
    ]
    for communicator in (first, second, other):
        ok, code = await communicator.connect()
        assert ok, code
    await sync_to_async(session.post)("/account/logout/")
    for communicator in (first, second):
        closed = await communicator.receive_output(timeout=3)
        assert closed == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
    await sync_to_async(create_escalation)(acme)
    assert (await next_frame(other, "created"))["type"] == "escalation"
    await other.disconnect()


async def test_a_session_ended_without_signing_out_closes_its_socket(acme, settings):
    settings.QUEUE_SESSION_RECHECK_SECONDS = 0.2
    client = await sync_to_async(_sign_in)(acme, "bob")
    communicator = await socket(acme, cookie=_cookie(client))
    ok, code = await communicator.connect()
    assert ok, code
    assert await communicator.receive_nothing(timeout=0.5)  # re-checked: still signed in
    await sync_to_async(client.session.delete)()
    closed = await communicator.receive_output(timeout=3)
    assert closed == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}


async def test_a_password_change_elsewhere_ends_the_sockets_session(acme, settings):
    settings.QUEUE_SESSION_RECHECK_SECONDS = 0.2
    communicator = await connected(acme, "bob")
    bob = acme.members["bob"].user
    bob.set_password("a-whole-new-secret-99")
    await sync_to_async(bob.save)()
    closed = await communicator.receive_output(timeout=3)
    assert closed == {"type": "websocket.close", "code": CLOSE_UNAUTHENTICATED}
