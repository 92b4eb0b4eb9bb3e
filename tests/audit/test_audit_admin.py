"""Platform admins can read the audit trail in Django admin and change nothing."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.console.helpers import verified

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    return verified(admin)  # Django admin always requires a second factor


def test_admin_lists_events(admin_client, record):
    record(101, target="esc_1")

    response = admin_client.get(reverse("admin:audit_auditevent_changelist"))

    assert response.status_code == 200
    assert b"esc_1" in response.content
    assert b"escalation.created" in response.content


def test_admin_shows_an_event_without_a_way_to_change_it(admin_client, record):
    event = record(101, target="esc_1")

    response = admin_client.get(reverse("admin:audit_auditevent_change", args=[event.pk]))

    assert response.status_code == 200
    assert event.hash.encode() in response.content
    assert b'name="_save"' not in response.content
    post = admin_client.post(
        reverse("admin:audit_auditevent_change", args=[event.pk]), {"target": "esc_2"}
    )
    assert post.status_code == 403


@pytest.mark.parametrize("view", ["add", "delete"])
def test_admin_refuses_to_add_or_delete_events(admin_client, record, view):
    event = record(101)
    args = [] if view == "add" else [event.pk]

    response = admin_client.get(reverse(f"admin:audit_auditevent_{view}", args=args))

    assert response.status_code == 403
