"""The agent API (``/api/v1/``): thin views over ``escalations.services``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, OpenApiTypes, extend_schema
from rest_framework import status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response as HttpResponse
from rest_framework.utils.urls import replace_query_param

from awaithuman.middleware import escalation_var
from tenants.api import KeyedAPIView
from tenants.lookups import get_for_organization_or_404
from tenants.models import Agent, Membership, Scope
from tenants.requests import ApiRequest

from . import history, idempotency, policies, services
from .errors import forbidden, invalid_fields
from .models import Escalation, Policy
from .serializers import (
    EscalationCreateSerializer,
    EscalationPageSerializer,
    EscalationSerializer,
    PolicyEvaluationSerializer,
    PolicyListSerializer,
    PolicySerializer,
    ResponseCreateSerializer,
    escalation_data,
)
from .streaming import streaming_response

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


def _filters(request: ApiRequest, *, extra: tuple[str, ...]) -> history.HistoryFilters:
    try:
        return history.HistoryFilters.parse(
            request.query_params.dict(), extra=extra, blank_is_absent=False
        )
    except history.HistoryError as exc:
        raise invalid_fields(exc.errors) from None


def _moment_parameter(name: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(
        name, OpenApiTypes.DATETIME, description=f"{description} An ISO date works too (UTC)."
    )


def _text_parameter(name: str, max_length: int, description: str) -> OpenApiParameter:
    """A filter that may not be blank: the API calls ``?policy=`` a mistake, not "any"."""
    schema = {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": r"\S"}
    return OpenApiParameter(name, schema, description=description)


FILTER_PARAMETERS = [
    OpenApiParameter("status", str, enum=list(Escalation.Status.values)),
    OpenApiParameter("kind", str, enum=list(Escalation.Kind.values)),
    OpenApiParameter("priority", str, enum=list(Escalation.Priority.values)),
    OpenApiParameter(
        "agent",
        {"type": "string", "maxLength": history.MAX_ID_CHARS},
        description="Only this agent's (`agt_…`).",
    ),
    _text_parameter("policy", history.MAX_ID_CHARS, "Only those this policy matched (`pol_…`)."),
    OpenApiParameter(
        "decided_by",
        {"type": "string", "pattern": history.DECIDED_BY_PATTERN},
        description="`human`, `policy`, `timeout`, `agent` (cancelled) or a member (`mem_…`).",
    ),
    OpenApiParameter(
        "channel", str, enum=list(history.CHANNELS), description="Where it was decided."
    ),
    OpenApiParameter(
        "external_id",
        {"type": "string", "maxLength": history.MAX_EXTERNAL_ID_CHARS},
        description="Blank: those created without one.",
    ),
    _moment_parameter("created_after", "Created at or after."),
    _moment_parameter("created_before", "Created before."),
    _moment_parameter("decided_after", "Decided at or after."),
    _moment_parameter("decided_before", "Decided before."),
    _text_parameter(
        "q",
        history.MAX_QUERY_CHARS,
        "Full-text search over the title, the reasoning, the action's name and arguments and "
        'the decision comment (PostgreSQL: web search syntax, `"a phrase"`, `or`, `-word`).',
    ),
]


class EscalationListCreateView(KeyedAPIView):
    required_scope = {"GET": Scope.ESCALATIONS_READ, "POST": Scope.ESCALATIONS_WRITE}

    @extend_schema(
        operation_id="escalations_list",
        parameters=[
            *FILTER_PARAMETERS,
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": history.MAX_PAGE_SIZE},
                description=f"1 to {history.MAX_PAGE_SIZE}; {history.PAGE_SIZE} when left out.",
            ),
            OpenApiParameter(
                "cursor",
                str,
                description="From `next` or `previous`; opaque. Blank: the first page.",
            ),
        ],
        responses={200: EscalationPageSerializer, **PROBLEMS},
        description="The organization's escalations, newest first, a page at a time.",
    )
    def get(self, request: ApiRequest) -> HttpResponse:
        filters = _filters(request, extra=("limit", "cursor"))
        try:
            limit = history.page_limit(request.query_params.get("limit"))
            escalations = history.history_queryset(request.organization, filters)
            page = history.history_page(
                escalations.select_related("agent", "assignee__user").prefetch_related(
                    "responses__membership__user"
                ),
                cursor=request.query_params.get("cursor"),
                limit=limit,
            )
        except history.HistoryError as exc:
            raise invalid_fields(exc.errors) from None
        url = request.build_absolute_uri()
        return HttpResponse(
            {
                "next": page.next_cursor and replace_query_param(url, "cursor", page.next_cursor),
                "previous": page.previous_cursor
                and replace_query_param(url, "cursor", page.previous_cursor),
                "results": EscalationSerializer(page.escalations, many=True).data,
            }
        )

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


class DownloadNegotiation(DefaultContentNegotiation):
    """``?format=`` names the download (CSV, JSON Lines), not one of DRF's renderers: errors are
    rendered as every other problem is, by the first renderer."""

    def select_renderer(
        self,
        request: Request,
        renderers: Iterable[BaseRenderer],
        format_suffix: str | None = None,
    ) -> tuple[BaseRenderer, str]:
        renderer = next(iter(renderers))
        return renderer, renderer.media_type


class EscalationExportView(KeyedAPIView):
    required_scope = Scope.ESCALATIONS_READ
    content_negotiation_class = DownloadNegotiation

    @extend_schema(
        operation_id="escalations_export",
        parameters=[
            OpenApiParameter("format", str, enum=list(history.EXPORT_FORMATS), required=True),
            *FILTER_PARAMETERS,
        ],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, streamed."),
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.STR, description="JSON Lines, streamed."
            ),
            **PROBLEMS,
        },
        description="Every escalation the list would show with these filters, newest first, "
        "as one CSV or JSON Lines download (README: History).",
    )
    def get(self, request: ApiRequest) -> StreamingHttpResponse:
        filters = _filters(request, extra=("format",))
        export_format = request.query_params.get("format", "")
        if export_format not in history.EXPORT_FORMATS:
            raise invalid_fields(
                {"format": [f"Must be one of: {', '.join(history.EXPORT_FORMATS)}."]}
            )
        lines = history.export_lines(
            history.history_queryset(request.organization, filters), export_format
        )
        return streaming_response(
            request._request,
            lines,
            content_type=history.EXPORT_FORMATS[export_format],
            filename=f"{request.organization.slug}-escalations.{export_format}",
        )


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
