"""Plan features: a Free organization is refused what only a paid plan includes, before anything
is written; a Team (or, for evidence bundles, Business) organization gets it."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest

from escalations.models import Policy
from notifications.models import ContactPoint
from tenants import billing
from tenants.models import Organization
from tests.console.helpers import signed_in, verified

pytestmark = pytest.mark.django_db

RANGE = {"since": "2000-01-01", "until": "2999-01-01"}


def _on_plan(tenant: Any, plan: str) -> None:
    Organization.objects.filter(pk=tenant.organization.pk).update(plan=plan)
    tenant.organization.refresh_from_db()


@pytest.fixture
def twilio_configured(settings: Any) -> None:
    settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN = "AC123", "token"
    settings.TWILIO_FROM_NUMBER = settings.TWILIO_WHATSAPP_FROM = "+15005550006"


def test_every_feature_a_plan_lists_has_a_plan_that_sells_it() -> None:
    listed = set().union(*(plan.features for plan in billing.PLANS.values()))
    assert listed == billing.ALL_FEATURES
    assert billing.plan_with_feature(billing.FEATURE_SMS) is billing.TEAM
    assert billing.plan_with_feature(billing.FEATURE_QUORUM) is billing.TEAM
    assert billing.plan_with_feature(billing.FEATURE_AUDIT_EXPORT) is billing.BUSINESS


def test_billing_off_every_feature_is_there(acme: Any) -> None:
    for feature in billing.ALL_FEATURES:
        assert billing.organization_has_feature(acme.organization, feature)
        billing.require_feature(acme.organization, feature, field="channel")


def test_require_feature_is_a_402_problem_naming_the_field_and_the_plan(
    acme: Any, billing_on: Any
) -> None:
    with pytest.raises(billing.PlanFeatureRequired) as refused:
        billing.require_feature(acme.organization, billing.FEATURE_SMS, field="channel")
    problem = refused.value
    assert problem.status_code == 402
    assert problem.type_slug == "plan-feature-required"
    assert list(problem.errors) == ["channel"]
    assert "Team plan" in problem.errors["channel"][0]
    assert problem.extra["feature"] == "sms_whatsapp"
    assert (problem.extra["plan"], problem.extra["required_plan"]) == ("free", "team")
    assert problem.extra["upgrade_url"].endswith("/org/billing/")


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
def test_free_organization_cannot_add_an_sms_or_whatsapp_contact_point(
    acme: Any, billing_on: Any, twilio_configured: None, channel: str
) -> None:
    bob = acme.members["bob"]
    page = signed_in(bob.user).post(
        "/contact-points/add", {"channel": channel, "address": "+14155550123"}, follow=True
    )
    assert b"not part of the Free plan" in page.content
    assert b"Team plan" in page.content
    assert not ContactPoint.objects.filter(membership=bob, channel=channel).exists()


def test_team_organization_adds_an_sms_contact_point(
    acme: Any, billing_on: Any, twilio_configured: None
) -> None:
    _on_plan(acme, "team")
    bob = acme.members["bob"]
    signed_in(bob.user).post("/contact-points/add", {"channel": "sms", "address": "+14155550123"})
    assert bob.contact_points.filter(channel="sms", address="+14155550123").exists()


def test_free_organization_still_adds_an_email_contact_point(acme: Any, billing_on: Any) -> None:
    bob = acme.members["bob"]
    signed_in(bob.user).post("/contact-points/add", {"channel": "email", "address": "b@x.test"})
    assert bob.contact_points.filter(channel="email", address="b@x.test").exists()


def _policy_form(tenant: Any, **overrides: Any) -> dict[str, Any]:
    data = {
        "organization": tenant.organization.pk,
        "name": "Two approvals for refunds",
        "enabled": "on",
        "priority": 10,
        "condition": 'action.name == "issue_refund"',
        "outcome": "require_human",
        "timeout_seconds": 600,
        "on_timeout": "reject",
        "required_approvals": 2,
        "repeat": 0,
        "levels-TOTAL_FORMS": 1,
        "levels-INITIAL_FORMS": 0,
        "levels-MIN_NUM_FORMS": 0,
        "levels-MAX_NUM_FORMS": 1000,
        "levels-0-position": 1,
        "levels-0-all_operators": "on",
        "levels-0-channels": ["email"],
        "levels-0-wait_seconds": 60,
    }
    data.update(overrides)
    return data


def test_free_organization_cannot_save_a_quorum_policy(acme: Any, billing_on: Any) -> None:
    client = verified(acme.members["alice"].user)
    response = client.post("/admin/escalations/policy/add/", _policy_form(acme))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert (
        "Quorums (more than one approval) are not part of the Free plan"
        in (errors["required_approvals"][0])
    )
    assert not Policy.objects.exists()

    single = client.post("/admin/escalations/policy/add/", _policy_form(acme, required_approvals=1))
    assert single.status_code == 302
    assert Policy.objects.get().required_approvals == 1


def test_free_organization_cannot_notify_a_policy_level_by_sms(acme: Any, billing_on: Any) -> None:
    client = verified(acme.members["alice"].user)
    form = _policy_form(acme, required_approvals=1, **{"levels-0-channels": ["email", "sms"]})
    response = client.post("/admin/escalations/policy/add/", form)
    assert response.status_code == 200
    (level_errors,) = response.context["inline_admin_formsets"][0].formset.errors
    assert (
        "SMS and WhatsApp notifications are not part of the Free plan"
        in (level_errors["channels"][0])
    )
    assert not Policy.objects.exists()


def test_team_organization_saves_a_quorum_policy_notified_by_sms(
    acme: Any, billing_on: Any
) -> None:
    _on_plan(acme, "team")
    client = verified(acme.members["alice"].user)
    form = _policy_form(acme, **{"levels-0-channels": ["sms"]})
    response = client.post("/admin/escalations/policy/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    policy = Policy.objects.get()
    assert policy.required_approvals == 2
    assert policy.levels.get().channels == ["sms"]


@pytest.mark.parametrize("plan", ["free", "team"])
def test_evidence_bundles_need_the_business_plan_on_the_api(
    acme: Any, billing_on: Any, plan: str
) -> None:
    _on_plan(acme, plan)
    response = acme.client_for("alice").get("/api/v1/audit/bundle", RANGE)
    assert response.status_code == 402
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"].endswith("/plan-feature-required")
    assert (body["feature"], body["plan"], body["required_plan"]) == (
        "audit_export",
        plan,
        "business",
    )
    assert "Business plan" in body["detail"]


def test_evidence_bundles_need_the_business_plan_in_the_console(acme: Any, billing_on: Any) -> None:
    client = signed_in(acme.members["alice"].user)
    refused = client.get("/org/evidence/", {**RANGE, "download": "1"})
    assert refused.status_code == 402
    assert b"Evidence bundles are not part of the Free plan" in refused.content
    assert b'data-testid="evidence-form"' in refused.content


def test_business_organization_downloads_an_evidence_bundle(acme: Any, billing_on: Any) -> None:
    _on_plan(acme, "business")
    api = acme.client_for("alice").get("/api/v1/audit/bundle", RANGE)
    assert api.status_code == 200
    assert api["Content-Type"] == "application/zip"
    download = signed_in(acme.members["alice"].user).get(
        "/org/evidence/", {**RANGE, "download": "1"}
    )
    assert download.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(download.streaming_content))) as bundle:
        assert "manifest.json" in bundle.namelist()
