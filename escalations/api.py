"""The agent API (``/api/v1/``): thin views over ``escalations.services``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response as HttpResponse

from awaithuman.middleware import escalation_var
from tenants.api import KeyedAPIView
from tenants.lookups import get_for_organization_or_404
from tenants.models import Agent, Membership, Scope
from tenants.requests import ApiRequest

from . import idempotency, policies, services
from .errors import forbidden, invalid_fields
from .models import Escalation, Policy
from .serializers import (
    EscalationCreateSerializer,
    EscalationPageSerializer,
    EscalationSerializer,
    ListQuerySerializer,
    PolicyEvaluationSerializer,
    PolicyListSerializer,
    PolicySerializer,
    ResponseCreateSerializer,
    escalation_data,
)

PROBLEM = OpenApiResponse(description="Problem details (RFC 9457, application/problem+json)")
PROBLEMS = {code: PROBLEM for code in (400, 401, 403, 404, 409, 413, 415, 422, 429)}


def _agent_only(request: ApiRequest) -> Agent:
    """The agent whose key made the request; a personal key is refused."""
    if request.agent is None:
        raise forbidden("Only an agent's API key can do this; personal keys answer, not ask.")
    return request.agent


def _member_only(request: ApiRequest) -> Membership:
    """The member whose personal key made the request; an agent's key is refused."""
    if request.membership is None:
        raise forbidden("Agent keys can never claim or answer; use a member's personal API key.")
    return request.membership


def _escalations(request: ApiRequest) -> Any:
    return request.organization.escalations.select_related(
        "agent", "assignee__user"
    ).prefetch_related("responses__membership__user")


def _get(request: ApiRequest, public_id: str) -> Escalation:
    # Tagged before the lookup, so that the log line of a 404 names what was asked for.
    escalation_var.set(public_id)
    return get_for_organization_or_404(
        _escalations(request), request.organization, public_id, prefix="esc"
    )


LIST_PARAMETERS = frozenset({"status", "external_id", "agent", "limit", "cursor"})


class NewestFirst(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 100

    invalid_cursor_message = (
        "The cursor is not one this API returned (or has expired); list again without it."
    )


class EscalationListCreateView(KeyedAPIView):
    required_scope = {"GET": Scope.ESCALATIONS_READ, "POST": Scope.ESCALATIONS_WRITE}

    @extend_schema(
        operation_id="escalations_list",
        parameters=[
            ListQuerySerializer,
        ],
        responses={200: EscalationPageSerializer, **PROBLEMS},
    )
    def get(self, request: ApiRequest) -> HttpResponse:
        unknown = sorted(set(request.query_params) - LIST_PARAMETERS)
        if unknown:
            raise invalid_fields({name: ["Unknown query parameter."] for name in unknown})
        # A plain dict, not the QueryDict: DRF would treat "?status=" as absent, not invalid.
        query = ListQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        filters = query.validated_data
        escalations = _escalations(request)
        if "status" in filters:
            escalations = escalations.filter(status=filters["status"])
        if "external_id" in filters:
            escalations = escalations.filter(external_id=filters["external_id"])
        if "agent" in filters:
            escalations = escalations.filter(agent__public_id=filters["agent"])
        paginator = NewestFirst()
        page = paginator.paginate_queryset(escalations, request, view=self)
        return paginator.get_paginated_response(EscalationSerializer(page, many=True).data)

    @extend_schema(
        operation_id="escalations_create",
        request=EscalationCreateSerializer,
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                {"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[ -~]+$"},
                OpenApiParameter.HEADER,
                description="Makes retries safe: the same key and body return the same escalation.",
            )
        ],
        responses={201: EscalationSerializer, 200: EscalationSerializer, **PROBLEMS},
    )
    def post(self, request: ApiRequest) -> HttpResponse:
        agent = _agent_only(request)
        serializer = EscalationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)

        def create() -> tuple[int, dict[str, Any]]:
            escalation = services.escalation_create(
                organization=request.organization,
                agent=agent,
                api_key=request.api_key,
                data=serializer.validated_data,
            )
            return status.HTTP_201_CREATED, escalation_data(escalation)

        outcome = idempotency.idempotent(
            organization=request.organization,
            key=request.headers.get("Idempotency-Key"),
            method="POST",
            path=request.path,
            body=request.data,
            work=create,
        )
        response = HttpResponse(outcome.body, status=outcome.status)
        if outcome.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


class EscalationDetailView(KeyedAPIView):
    required_scope = Scope.ESCALATIONS_READ

    @extend_schema(
        operation_id="escalations_retrieve",
        responses={200: EscalationSerializer, **PROBLEMS},
    )
    def get(self, request: ApiRequest, public_id: str) -> HttpResponse:
        return HttpResponse(escalation_data(_get(request, public_id)))


class EscalationCancelView(KeyedAPIView):
    required_scope = Scope.ESCALATIONS_WRITE

    @extend_schema(
        operation_id="escalations_cancel",
        request=None,
        responses={200: EscalationSerializer, **PROBLEMS},
    )
    def post(self, request: ApiRequest, public_id: str) -> HttpResponse:
        _agent_only(request)
        escalation = services.escalation_cancel(
            escalation=_get(request, public_id), api_key=request.api_key
        )
        return HttpResponse(escalation_data(escalation))


class EscalationClaimView(KeyedAPIView):
    required_scope = Scope.RESPONSES_WRITE

    @extend_schema(
        operation_id="escalations_claim",
        request=None,
        responses={200: EscalationSerializer, **PROBLEMS},
    )
    def post(self, request: ApiRequest, public_id: str) -> HttpResponse:
        membership = _member_only(request)
        escalation = services.escalation_claim(
            escalation=_get(request, public_id), membership=membership
        )
        return HttpResponse(escalation_data(_get(request, escalation.public_id)))

    @extend_schema(
        operation_id="escalations_release",
        request=None,
        responses={200: EscalationSerializer, **PROBLEMS},
    )
    def delete(self, request: ApiRequest, public_id: str) -> HttpResponse:
        membership = _member_only(request)
        escalation = services.escalation_release(
            escalation=_get(request, public_id), membership=membership
        )
        return HttpResponse(escalation_data(_get(request, escalation.public_id)))


class ResponseCreateView(KeyedAPIView):
    required_scope = Scope.RESPONSES_WRITE

    @extend_schema(
        operation_id="escalations_respond",
        request=ResponseCreateSerializer,
        responses={201: EscalationSerializer, **PROBLEMS},
    )
    def post(self, request: ApiRequest, public_id: str) -> HttpResponse:
        membership = _member_only(request)
        escalation = _get(request, public_id)
        serializer = ResponseCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        services.response_submit(
            escalation=escalation,
            membership=membership,
            outcome=data["outcome"],
            response=data.get("response"),
            comment=data.get("comment", ""),
            edited_arguments=data.get("edited_arguments"),
            channel="api",
        )
        return HttpResponse(
            escalation_data(_get(request, public_id)), status=status.HTTP_201_CREATED
        )


class PolicyEvaluateView(KeyedAPIView):
    required_scope = Scope.ESCALATIONS_WRITE

    @extend_schema(
        operation_id="policies_evaluate",
        request=EscalationCreateSerializer,
        responses={200: PolicyEvaluationSerializer, **PROBLEMS},
    )
    def post(self, request: ApiRequest) -> HttpResponse:
        agent = _agent_only(request)
        serializer = EscalationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = policies.policy_evaluate(organization=request.organization, agent=agent, data=data)
        return HttpResponse(result.as_dict(kind=data["kind"], data=data))


class PolicyListView(KeyedAPIView):
    required_scope = Scope.POLICIES_READ

    @extend_schema(
        operation_id="policies_list",
        responses={200: PolicyListSerializer, **PROBLEMS},
    )
    def get(self, request: ApiRequest) -> HttpResponse:
        policies = (
            Policy.objects.filter(organization=request.organization)
            .prefetch_related("levels__members", "levels__teams", "agents")
            .order_by("priority", "id")
        )
        return HttpResponse({"results": PolicySerializer(policies, many=True).data})
