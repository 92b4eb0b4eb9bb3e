"""The escalation object is built by hand for speed; it must stay what DRF's generic walk over
the declared fields (which the OpenAPI schema describes) would give."""

from __future__ import annotations

import pytest
from rest_framework import serializers

from escalations.models import Escalation
from escalations.serializers import EscalationSerializer
from tests.conftest import Tenant, create_escalation


def _generic(escalation: Escalation) -> dict:
    return serializers.Serializer.to_representation(EscalationSerializer(), escalation)


@pytest.mark.parametrize("step", ["pending", "claimed", "approved", "question answered"])
def test_the_fast_representation_equals_the_declared_one(acme: Tenant, step: str) -> None:
    kind = "question" if step == "question answered" else "approval"
    created = create_escalation(acme, kind=kind, external_id="run_42", metadata={"k": [1]})
    bob = acme.client_for("bob")
    if step in ("claimed", "approved", "question answered"):
        assert bob.post(f"/api/v1/escalations/{created['id']}/claim").status_code == 200
    if step == "approved":
        answer = {"outcome": "approve", "comment": "ok"}
        assert (
            bob.post(
                f"/api/v1/escalations/{created['id']}/responses", answer, format="json"
            ).status_code
            == 201
        )
    if step == "question answered":
        answer = {"outcome": "answer", "response": {"answer": "yes"}}
        assert (
            bob.post(
                f"/api/v1/escalations/{created['id']}/responses", answer, format="json"
            ).status_code
            == 201
        )

    escalation = Escalation.objects.get(public_id=created["id"])
    fast = EscalationSerializer(escalation).data
    assert fast == _generic(escalation)
    assert list(fast) == list(_generic(escalation))  # same keys, same order
    if step == "approved":
        assert fast["decision"]["receipt"]
        assert fast["approvals"][0]["by"]["email"] == "bob@acme.test"
