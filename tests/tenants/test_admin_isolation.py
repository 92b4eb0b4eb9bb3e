"""Django admin as an organization's owner sees it: not one name or object of another tenant on
any page an org admin can open (index, changelists and their filters, add and change forms, the
dry run, autocomplete)."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.urls import reverse

from escalations.models import Policy, PolicyLevel
from tenants.models import Team
from tests.console.helpers import verified

pytestmark = pytest.mark.django_db

# What would give Globex away: its name, its slug (in e-mails and the agent's name), its people.
GLOBEX_MARKERS = ("globex", "charlie", "dana")


@pytest.fixture
def both_tenants(acme, globex):
    for tenant, label in ((acme, "Acme"), (globex, "Globex")):
        organization = tenant.organization
        team = Team.objects.create(organization=organization, name=f"{label} night shift")
        team.members.add(*tenant.members.values())
        policy = Policy.objects.create(organization=organization, name=f"{label} refunds")
        policy.agents.add(*organization.agents.all())
        level = PolicyLevel.objects.create(policy=policy, position=1)
        level.members.add(*tenant.members.values())
        level.teams.add(team)
    return acme, globex


def admin_pages(organization) -> list[str]:
    """Every page of every registered model: the index, each app, each changelist (also
    filtered), each add form, and the change form of each of this organization's objects."""
    pages = {reverse("admin:index"), reverse("admin:escalations_policy_dry_run")}
    for model, model_admin in admin.site._registry.items():
        info = (model._meta.app_label, model._meta.model_name)
        pages.add(reverse("admin:app_list", args=(info[0],)))
        changelist = reverse("admin:{}_{}_changelist".format(*info))
        pages.update({changelist, f"{changelist}?q=a", reverse("admin:{}_{}_add".format(*info))})
        path = getattr(model_admin, "organization_path", None)
        if path is not None:
            for obj in model._default_manager.filter(**{path: organization}):
                pages.add(reverse("admin:{}_{}_change".format(*info), args=(obj.pk,)))
    return sorted(pages)


def autocomplete_requests() -> list[dict[str, str]]:
    """Every relation of every registered model, asked for through the admin's autocomplete."""
    requests = []
    for model in admin.site._registry:
        for field in model._meta.get_fields():
            if field.is_relation and not field.auto_created:
                requests.append(
                    {
                        "app_label": model._meta.app_label,
                        "model_name": model._meta.model_name,
                        "field_name": field.name,
                        "term": "",
                    }
                )
    return requests


def test_org_owner_sees_no_other_organization_on_any_admin_page(both_tenants):
    acme, _ = both_tenants
    client = verified(acme.members["alice"].user)
    for page in admin_pages(acme.organization):
        response = client.get(page)
        assert response.status_code in (200, 403, 404), (page, response.status_code)
        content = response.content.decode().lower()
        leaked = [marker for marker in GLOBEX_MARKERS if marker in content]
        assert not leaked, (page, leaked)
    policies = client.get(reverse("admin:escalations_policy_changelist")).content.decode()
    assert "Acme refunds" in policies


def test_org_owner_gets_no_other_organization_from_autocomplete(both_tenants):
    acme, _ = both_tenants
    client = verified(acme.members["alice"].user)
    for params in autocomplete_requests():
        response = client.get(reverse("admin:autocomplete"), params)
        assert response.status_code in (200, 403, 404), (params, response.status_code)
        content = response.content.decode().lower()
        leaked = [marker for marker in GLOBEX_MARKERS if marker in content]
        assert not leaked, (params, leaked)


def test_org_owner_finds_their_organization_chosen_in_a_new_policy(both_tenants):
    acme, _ = both_tenants
    client = verified(acme.members["alice"].user)
    form = client.get(reverse("admin:escalations_policy_add")).context["adminform"].form
    field = form.fields["organization"]
    assert list(field.queryset) == [acme.organization]
    assert form.initial["organization"] == acme.organization.pk
    assert field.empty_label is None


def test_the_condition_help_shows_its_placeholders_as_text(both_tenants):
    acme, _ = both_tenants
    page = verified(acme.members["alice"].user).get(reverse("admin:escalations_policy_add"))
    assert "action.arguments.&lt;key&gt;" in page.content.decode()
