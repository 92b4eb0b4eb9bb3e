"""Platform admins can read contact points, preferences, deliveries and answer codes in Django
admin, change nothing, and never see a verification digest or an answer code."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

from escalations.models import Escalation
from notifications.answer_codes import answer_code_for
from notifications.models import ChannelAnswerCode, ContactPoint, Delivery, NotificationPreference
from tests.console.helpers import verified

from .conftest import SmtpServer, new_escalation

pytestmark = pytest.mark.django_db

MODELS = [ContactPoint, NotificationPreference, Delivery, ChannelAnswerCode]


@pytest.fixture
def admin_client(db: Any) -> Any:
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    return verified(admin)  # Django admin always requires a second factor


@pytest.fixture
def sent(acme: Any, smtp: SmtpServer, django_capture_on_commit_callbacks: Any) -> Delivery:
    created = new_escalation(django_capture_on_commit_callbacks, acme)
    escalation = Escalation.objects.get(public_id=created["id"])
    answer_code_for(escalation=escalation, membership=acme.members["bob"])
    return Delivery.objects.filter(escalation=escalation).first()


def _url(model: Any, view: str, *args: Any) -> str:
    return reverse(f"admin:notifications_{model._meta.model_name}_{view}", args=args)


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


def test_admin_shows_no_answer_code_or_token(admin_client, sent):
    code = ChannelAnswerCode.objects.get()

    page = admin_client.get(_url(ChannelAnswerCode, "change", code.pk))

    assert code.token.encode() not in page.content
    assert f">{code.code}<".encode() not in page.content
