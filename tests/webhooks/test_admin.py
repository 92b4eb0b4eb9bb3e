"""Platform admins can read webhook endpoints, callback endpoints and messages with their
attempts in Django admin, change nothing, and never see a signing secret."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from tests.conftest import create_escalation
from tests.console.helpers import verified
from tests.notifications.fake_receiver import running_receiver
from webhooks.models import CallbackEndpoint, WebhookEndpoint, WebhookMessage

from .test_webhooks import add_webhook, decide

pytestmark = pytest.mark.django_db

MODELS = [WebhookEndpoint, CallbackEndpoint, WebhookMessage]


@pytest.fixture
def admin_client(db: Any) -> Any:
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    return verified(admin)  # Django admin always requires a second factor


@pytest.fixture
def sent(acme: Any, django_capture_on_commit_callbacks: Any) -> WebhookEndpoint:
    with running_receiver() as receiver:
        endpoint, _ = add_webhook(acme, receiver.url, ["escalation.decided"])
        with django_capture_on_commit_callbacks(execute=True):
            escalation = create_escalation(acme, callback_url=receiver.url)
        decide(django_capture_on_commit_callbacks, acme, escalation["id"])
    return endpoint


def _url(model: Any, view: str, *args: Any) -> str:
    return reverse(f"admin:webhooks_{model._meta.model_name}_{view}", args=args)


@pytest.mark.parametrize("model", MODELS, ids=lambda model: model.__name__)
def test_admin_lists_and_shows_them_without_a_way_to_change_them(admin_client, sent, model):
    row = model.objects.first()

    listing = admin_client.get(_url(model, "changelist"))
    page = admin_client.get(_url(model, "change", row.pk))

    assert listing.status_code == 200
    assert page.status_code == 200
    assert b'name="_save"' not in page.content
    assert admin_client.post(_url(model, "change", row.pk), {}).status_code == 403
    assert admin_client.get(_url(model, "add")).status_code == 403
    assert admin_client.get(_url(model, "delete", row.pk)).status_code == 403


def test_admin_shows_no_signing_secret(admin_client, sent):
    page = admin_client.get(_url(WebhookEndpoint, "change", sent.pk))

    assert sent.secret.encode() not in page.content
