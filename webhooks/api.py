"""The agent API of callbacks: an escalation's callback deliveries, and replaying a failed one.

``GET /api/v1/escalations/{id}/callbacks`` (``escalations:read``) lists them with every attempt;
``POST /api/v1/escalations/{id}/callbacks/replay`` (``escalations:write``, the escalation's own
agent) sends a failed one again, now, with the same ``webhook-id``.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response as HttpResponse

from awaithuman.middleware import escalation_var
from escalations.errors import conflict, forbidden
from escalations.models import Escalation
from tenants.api import KeyedAPIView
from tenants.lookups import get_for_organization_or_404
from tenants.models import Scope
from tenants.requests import ApiRequest

from . import services
from .models import WebhookMessage

PROBLEM = OpenApiResponse(description="Problem details (RFC 9457, application/problem+json)")
PROBLEMS = {code: PROBLEM for code in (401, 403, 404, 409, 429)}


class CallbackAttemptSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    attempted_at = serializers.DateTimeField()
    status_code = serializers.IntegerField(allow_null=True)
    duration_ms = serializers.IntegerField()
    response_body = serializers.CharField(help_text="The start of the receiver's answer.")
    error = serializers.CharField()


class CallbackSerializer(serializers.Serializer):
    id = serializers.CharField(source="public_id", help_text="The `webhook-id` header it carries.")
    type = serializers.CharField(source="event_type")
    url = serializers.CharField()
    status = serializers.ChoiceField(choices=WebhookMessage.Status.choices)
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField()
    attempts = CallbackAttemptSerializer(many=True, source="attempts.all")


class CallbackListSerializer(serializers.Serializer):
    results = CallbackSerializer(many=True)


def _escalation(request: ApiRequest, public_id: str) -> Escalation:
    escalation = get_for_organization_or_404(
        Escalation, request.organization, public_id, prefix="esc"
    )
    escalation_var.set(public_id)
    return escalation


def _callbacks(escalation: Escalation) -> list[WebhookMessage]:
    return list(
        escalation.webhook_messages.filter(kind=WebhookMessage.Kind.CALLBACK).prefetch_related(
            "attempts"
        )
    )


class CallbackListView(KeyedAPIView):
    required_scope = Scope.ESCALATIONS_READ

    @extend_schema(
        operation_id="escalations_callbacks_list",
        responses={200: CallbackListSerializer, **PROBLEMS},
    )
    def get(self, request: ApiRequest, public_id: str) -> HttpResponse:
        escalation = _escalation(request, public_id)
        return HttpResponse({"results": CallbackSerializer(_callbacks(escalation), many=True).data})


class CallbackReplayView(KeyedAPIView):
    required_scope = Scope.ESCALATIONS_WRITE

    @extend_schema(
        operation_id="escalations_callbacks_replay",
        request=None,
        responses={202: CallbackSerializer, **PROBLEMS},
    )
    def post(self, request: ApiRequest, public_id: str) -> HttpResponse:
        escalation = _escalation(request, public_id)
        if request.agent is None or escalation.agent_id != request.agent.pk:
            raise forbidden("Only the agent that created an escalation can replay its callback.")
        failed = [message for message in _callbacks(escalation) if message.can_replay]
        if not failed:
            raise conflict(
                "This escalation has no failed callback delivery to replay.",
                type_slug="not-replayable",
            )
        message = services.webhook_message_replay(
            message=failed[0], actor=request.api_key.as_actor()
        )
        message = next(m for m in _callbacks(escalation) if m.pk == message.pk)
        return HttpResponse(CallbackSerializer(message).data, status=status.HTTP_202_ACCEPTED)
