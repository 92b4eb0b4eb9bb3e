"""``escalations.rules``: what the console offers is exactly what the services accept."""

from __future__ import annotations

import pytest

from escalations import rules, services
from escalations.exceptions import Conflict, EscalationError, NotAllowed
from escalations.models import Escalation
from tests.conftest import create_escalation

pytestmark = pytest.mark.django_db


def _escalation(tenant, **overrides) -> Escalation:
    return Escalation.objects.get(public_id=create_escalation(tenant, **overrides)["id"])


def _accepted(action, **kwargs) -> bool:
    try:
        action(**kwargs)
    except EscalationError:
        return False
    return True


@pytest.mark.parametrize("person", ["alice", "bob", "vera"])
def test_claim_is_offered_exactly_where_the_service_accepts_it(acme, person):
    escalation = _escalation(acme)
    membership = acme.members[person]
    offered = rules.can_claim(escalation, membership)
    assert offered == _accepted(
        services.escalation_claim, escalation=escalation, membership=membership
    )


@pytest.mark.parametrize("person", ["alice", "bob", "vera"])
def test_release_of_someone_elses_claim_is_offered_exactly_where_accepted(acme, person):
    escalation = _escalation(acme)
    holder = acme.members["bob"] if person != "bob" else acme.members["alice"]
    escalation = services.escalation_claim(escalation=escalation, membership=holder)
    membership = acme.members[person]
    offered = rules.can_release(escalation, membership)
    assert offered == _accepted(
        services.escalation_release, escalation=escalation, membership=membership
    )


def test_a_viewer_is_refused_with_a_not_allowed_that_names_no_http_status(acme):
    escalation = _escalation(acme)
    refusal = rules.answer_refusal(escalation, acme.members["vera"])
    assert isinstance(refusal, NotAllowed)
    assert refusal.detail == "Viewers cannot answer escalations."
    assert not hasattr(refusal, "status_code")


def test_answering_a_decided_escalation_is_a_terminal_conflict(acme):
    escalation = _escalation(acme)
    services.response_submit(
        escalation=escalation, membership=acme.members["bob"], outcome="approve"
    )
    escalation.refresh_from_db()
    refusal = rules.answer_refusal(escalation, acme.members["alice"])
    assert isinstance(refusal, Conflict)
    assert refusal.code == "escalation-terminal"
    assert refusal.extra == {"escalation_status": "approved"}
    assert not rules.can_answer(escalation, acme.members["alice"], answered=False)
