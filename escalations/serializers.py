"""Input and output shapes of the escalation API."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import Escalation, Policy, Response
from .policies import policy_snapshot
from .receipts import receipt_for
from .schemas import schema_problem

MAX_TIMEOUT_SECONDS = 30 * 24 * 3600


class JSONObjectField(serializers.JSONField):
    default_error_messages = {"not_object": "Must be a JSON object."}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            self.fail("not_object")
        return super().to_internal_value(data)


@extend_schema_field({"type": "object", "additionalProperties": True})
class _ObjectSchemaField(JSONObjectField):
    pass


# "Something besides white space", spelled out as JSON Schema (ECMAScript) sees white space, so
# the documented pattern and the server agree on every string.
_SPACE = "\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NOT_ONLY_SPACE = RegexValidator(f"[^{_SPACE}]", message="Must not be blank.")


class StrictCharField(serializers.CharField):
    """A JSON string, kept as sent. DRF's ``CharField`` would quietly turn ``123`` into
    ``"123"``, and trim white space by Python's rules (which differ from JSON Schema's), so a
    string that meets the documented ``minLength`` could come out blank."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON number without a fraction. DRF's ``IntegerField`` would also take ``"60"``."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


# http(s), a host (no userinfo, no bracketed literal), then no spaces or control characters.
# Character classes, not ``\s``: Python's and ECMAScript's ``\s`` differ (e.g. on U+0085), and
# clients validate against this pattern with the latter.
CALLBACK_URL_PATTERN = (
    r"^https?://[^\x00-\x20\x7f-\x9f/?#@:\[\]][^\x00-\x20\x7f-\x9f/?#@\[\]]*"
    r"(?:[/?#][^\x00-\x20\x7f-\x9f]*)?$"
)


@extend_schema_field({"type": "string", "maxLength": 2000, "pattern": CALLBACK_URL_PATTERN})
class CallbackUrlField(serializers.CharField):
    """An http(s) URL with a host. Whether the host may be reached is decided at delivery time,
    when it is resolved (an allow-list at save time would be defeated by DNS changes)."""

    default_error_messages = {"invalid": "Must be an http(s) URL with a host."}

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if value and not (re.match(CALLBACK_URL_PATTERN, value) and _has_host(value)):
            self.fail("invalid")
        return value


def _has_host(url: str) -> bool:
    try:
        return bool(urlsplit(url).hostname)
    except ValueError:
        return False


class StrictFieldsMixin:
    """Unknown fields are refused by name, so a typo never passes silently.

    Checked in ``to_internal_value`` rather than ``validate``: that runs for nested serializers
    too (``action.args``), and the unknown names are reported together with the other bad fields.
    """

    def to_internal_value(self, data: Any) -> Any:
        known = self.fields  # type: ignore[attr-defined]
        unknown = sorted(set(data) - set(known)) if isinstance(data, Mapping) else []
        errors = {name: ["Unknown field."] for name in unknown}
        try:
            value = super().to_internal_value(data)  # type: ignore[misc]
        except serializers.ValidationError as exc:
            if errors and isinstance(exc.detail, dict):
                raise serializers.ValidationError({**exc.detail, **errors}) from None
            raise
        if errors:
            raise serializers.ValidationError(errors)
        return value


class ActionSerializer(StrictFieldsMixin, serializers.Serializer):
    name = StrictCharField(max_length=200)
    arguments = _ObjectSchemaField(required=False, default=dict)


class ContextSerializer(serializers.Serializer):
    """The agent's picture: reasoning, tool calls and conversation; other keys are kept as sent."""

    reasoning = StrictCharField(required=False, allow_blank=True, max_length=200_000)
    tool_calls = serializers.ListField(child=serializers.JSONField(allow_null=True), required=False)
    messages = serializers.ListField(child=serializers.JSONField(allow_null=True), required=False)

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        known = super().to_internal_value(data)
        return {**data, **known}


class EscalationCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    kind = serializers.ChoiceField(choices=Escalation.Kind.choices)
    title = StrictCharField(max_length=300, validators=[NOT_ONLY_SPACE])
    action = ActionSerializer(required=False, allow_null=True)
    # The stubs type ``context`` as Field's property; DRF's serializer metaclass takes declared
    # fields off the class, so at run time this field shadows nothing.
    context = ContextSerializer(required=False)  # type: ignore[assignment]
    response_schema = _ObjectSchemaField(required=False, allow_null=True)
    priority = serializers.ChoiceField(choices=Escalation.Priority.choices, required=False)
    timeout_seconds = StrictIntegerField(required=False, min_value=1, max_value=MAX_TIMEOUT_SECONDS)
    on_timeout = serializers.ChoiceField(choices=Escalation.OnTimeout.choices, required=False)
    callback_url = CallbackUrlField(max_length=2000, required=False, allow_blank=True)
    external_id = StrictCharField(max_length=200, required=False, allow_blank=True)
    metadata = _ObjectSchemaField(required=False)

    def validate_response_schema(self, value: Any) -> Any:
        if value is not None:
            problem = schema_problem(value)
            if problem:
                raise serializers.ValidationError(problem)
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if attrs["kind"] == Escalation.Kind.QUESTION and attrs.get("on_timeout") == "approve":
            raise serializers.ValidationError(
                {"on_timeout": ["A question cannot be approved on timeout; use expire."]}
            )
        return attrs


class ResponseCreateSerializer(StrictFieldsMixin, serializers.Serializer):
    outcome = serializers.ChoiceField(choices=Response.Outcome.choices)
    response = serializers.JSONField(required=False, allow_null=True)
    comment = StrictCharField(required=False, allow_blank=True, max_length=10_000)
    edited_arguments = JSONObjectField(required=False, allow_null=True)


class RefSerializer(serializers.Serializer):
    id = serializers.CharField()
    name = serializers.CharField()


class DecisionSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=sorted(Escalation.TERMINAL))
    response = serializers.JSONField(allow_null=True)
    comment = serializers.CharField()
    edited_arguments = serializers.JSONField(allow_null=True)
    decided_by = serializers.DictField()
    decided_at = serializers.DateTimeField()
    channel = serializers.CharField(allow_null=True)
    receipt = serializers.CharField(allow_null=True)


class ApprovalSerializer(serializers.Serializer):
    by = serializers.DictField()
    at = serializers.DateTimeField()
    comment = serializers.CharField()
    channel = serializers.CharField()


class LinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    wait = serializers.URLField()
    console = serializers.URLField()


_datetime = serializers.DateTimeField().to_representation


class EscalationSerializer(serializers.Serializer):
    id = serializers.CharField(source="public_id")
    status = serializers.ChoiceField(choices=Escalation.Status.choices)
    kind = serializers.ChoiceField(choices=Escalation.Kind.choices)
    title = serializers.CharField()
    action = serializers.JSONField(allow_null=True)
    context = serializers.JSONField()  # type: ignore[assignment]  # a field, not Field.context
    response_schema = serializers.JSONField()
    priority = serializers.ChoiceField(choices=Escalation.Priority.choices)
    timeout_seconds = serializers.IntegerField()
    on_timeout = serializers.ChoiceField(choices=Escalation.OnTimeout.choices)
    callback_url = serializers.CharField()
    external_id = serializers.CharField()
    metadata = serializers.JSONField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    agent = serializers.SerializerMethodField()
    claimed_by = serializers.SerializerMethodField()
    required_approvals = serializers.IntegerField()
    approvals = serializers.SerializerMethodField()
    policy = serializers.SerializerMethodField()
    level = serializers.SerializerMethodField()
    decision = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    def to_representation(self, escalation: Escalation) -> dict[str, Any]:
        """The fields above, built directly: every API response carries escalations, and DRF's
        generic walk (a deep copy of the declared fields per serializer, a call per field) cost
        several times this. ``test_serializers`` checks that both give the same result."""
        return {
            "id": escalation.public_id,
            "status": escalation.status,
            "kind": escalation.kind,
            "title": escalation.title,
            "action": escalation.action,
            "context": escalation.context,
            "response_schema": escalation.response_schema,
            "priority": escalation.priority,
            "timeout_seconds": escalation.timeout_seconds,
            "on_timeout": escalation.on_timeout,
            "callback_url": escalation.callback_url,
            "external_id": escalation.external_id,
            "metadata": escalation.metadata,
            "created_at": _datetime(escalation.created_at),
            "expires_at": _datetime(escalation.expires_at),
            "agent": self.get_agent(escalation),
            "claimed_by": self.get_claimed_by(escalation),
            "required_approvals": escalation.required_approvals,
            "approvals": self.get_approvals(escalation),
            "policy": self.get_policy(escalation),
            "level": self.get_level(escalation),
            "decision": self.get_decision(escalation),
            "links": self.get_links(escalation),
        }

    @extend_schema_field(RefSerializer)
    def get_agent(self, escalation: Escalation) -> dict[str, str]:
        return {"id": escalation.agent.public_id, "name": escalation.agent.name}

    @extend_schema_field({"type": "object", "nullable": True})
    def get_claimed_by(self, escalation: Escalation) -> dict[str, str] | None:
        if escalation.assignee is None:
            return None
        return {"id": escalation.assignee.public_id, "email": escalation.assignee.user.email}

    @extend_schema_field(ApprovalSerializer(many=True))
    def get_approvals(self, escalation: Escalation) -> list[dict[str, Any]]:
        """Who has approved so far: "1 of 2 approvals" is ``len(approvals)`` of
        ``required_approvals``."""
        return [
            {
                "by": {
                    "id": response.membership.public_id,
                    "email": response.membership.user.email,
                },
                "at": _datetime(response.created_at),
                "comment": response.comment,
                "channel": response.channel,
            }
            for response in escalation.responses.all()
            if response.outcome == Response.Outcome.APPROVE
        ]

    @extend_schema_field({"type": "object", "nullable": True})
    def get_level(self, escalation: Escalation) -> dict[str, int] | None:
        if not (escalation.policy_snapshot or {}).get("levels"):
            return None
        return {"level": escalation.current_level, "round": escalation.current_round}

    @extend_schema_field(RefSerializer(allow_null=True))
    def get_policy(self, escalation: Escalation) -> dict[str, str] | None:
        snapshot = escalation.policy_snapshot
        if not snapshot:
            return None
        return {"id": snapshot["id"], "name": snapshot["name"]}

    @extend_schema_field(DecisionSerializer(allow_null=True))
    def get_decision(self, escalation: Escalation) -> dict[str, Any] | None:
        if not escalation.is_terminal:
            return None
        return {
            "outcome": escalation.status,
            "response": escalation.decision_response,
            "comment": escalation.decision_comment,
            "edited_arguments": escalation.edited_arguments,
            "decided_by": escalation.decided_by,
            "decided_at": _datetime(escalation.decided_at) if escalation.decided_at else None,
            "channel": escalation.decision_channel or None,
            "receipt": receipt_for(escalation),
        }

    @extend_schema_field(LinksSerializer)
    def get_links(self, escalation: Escalation) -> dict[str, str]:
        base = settings.AWAITHUMAN_BASE_URL
        path = f"/api/v1/escalations/{escalation.public_id}"
        return {
            "self": f"{base}{path}",
            "wait": f"{base}{path}/wait",
            "console": escalation.console_url,
        }


class EscalationPageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = EscalationSerializer(many=True)


def escalation_data(escalation: Escalation) -> dict[str, Any]:
    return EscalationSerializer(escalation).data


class LevelTargetsSerializer(serializers.Serializer):
    all_operators = serializers.BooleanField()
    roles = serializers.ListField(child=serializers.CharField())
    members = serializers.ListField(child=serializers.CharField())
    teams = serializers.ListField(child=serializers.CharField())


class PolicyLevelSerializer(serializers.Serializer):
    position = serializers.IntegerField()
    wait_seconds = serializers.IntegerField()
    reminder_seconds = serializers.IntegerField(allow_null=True)
    channels = serializers.ListField(child=serializers.CharField())
    targets = LevelTargetsSerializer()


class PolicyEvaluationSerializer(serializers.Serializer):
    policy = RefSerializer(allow_null=True)
    outcome = serializers.ChoiceField(choices=Policy.Outcome.choices)
    levels = PolicyLevelSerializer(many=True)
    timeout_seconds = serializers.IntegerField()
    on_timeout = serializers.ChoiceField(choices=Escalation.OnTimeout.choices)
    required_approvals = serializers.IntegerField()


class PolicySerializer(serializers.Serializer):
    """A policy as agents see it (``GET /api/v1/policies``), in the shape of its snapshot."""

    id = serializers.CharField(source="public_id")
    name = serializers.CharField()
    enabled = serializers.BooleanField()
    priority = serializers.IntegerField()
    condition = serializers.CharField()
    outcome = serializers.ChoiceField(choices=Policy.Outcome.choices)
    agents = serializers.SerializerMethodField()
    timeout_seconds = serializers.IntegerField(allow_null=True)
    on_timeout = serializers.CharField(allow_null=True)
    required_approvals = serializers.IntegerField()
    repeat = serializers.IntegerField()
    levels = serializers.SerializerMethodField()

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_agents(self, policy: Any) -> list[str]:
        return [agent.public_id for agent in policy.agents.all()]

    @extend_schema_field(PolicyLevelSerializer(many=True))
    def get_levels(self, policy: Any) -> list[dict[str, Any]]:
        return policy_snapshot(policy)["levels"]

    def to_representation(self, instance: Any) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["on_timeout"] = data["on_timeout"] or None
        return data


class PolicyListSerializer(serializers.Serializer):
    results = PolicySerializer(many=True)
