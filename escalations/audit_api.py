"""The compliance API: signed checkpoints of the organization's audit chain, and exports.

Checkpoints say nothing an ``escalations:read`` key cannot already read (a count and a hash), so
that scope reads them and asks for one at the current head. Exports are the escalations that
scope can list already, in another shape.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, OpenApiTypes, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response as HttpResponse

from audit.checkpoints import CheckpointError, checkpoint_issue
from audit.models import Checkpoint
from tenants.api import KeyedAPIView
from tenants.billing import FEATURE_AUDIT_EXPORT, require_feature
from tenants.lookups import get_for_organization_or_404
from tenants.models import Scope
from tenants.requests import ApiRequest

from . import bundles, exports
from .errors import conflict, forbidden, invalid_fields
from .streaming import streaming_response

PROBLEM = OpenApiResponse(description="Problem details (RFC 9457, application/problem+json)")
PROBLEMS = {code: PROBLEM for code in (400, 401, 403, 404, 409, 429)}
LIST_LIMIT = 100


class CheckpointSerializer(serializers.Serializer):
    id = serializers.CharField(source="public_id")
    seq = serializers.IntegerField(help_text="How many events of the chain the checkpoint covers.")
    hash = serializers.CharField(help_text="The hash of event `seq`, lowercase hex.")
    note = serializers.CharField(help_text="The signed note (C2SP tlog-checkpoint), verbatim.")
    created_at = serializers.DateTimeField()


class CheckpointListSerializer(serializers.Serializer):
    results = CheckpointSerializer(many=True)


def _checkpoints(request: ApiRequest) -> Any:
    return Checkpoint.objects.filter(organization_id=request.organization.pk).order_by("-seq")


class CheckpointListView(KeyedAPIView):
    required_scope = Scope.ESCALATIONS_READ

    @extend_schema(
        operation_id="audit_checkpoints_list",
        responses={200: CheckpointListSerializer, **PROBLEMS},
        description=f"The organization's latest {LIST_LIMIT} checkpoints, newest first.",
    )
    def get(self, request: ApiRequest) -> HttpResponse:
        rows = _checkpoints(request)[:LIST_LIMIT]
        return HttpResponse({"results": CheckpointSerializer(rows, many=True).data})

    @extend_schema(
        operation_id="audit_checkpoints_sign",
        request=None,
        responses={201: CheckpointSerializer, 200: CheckpointSerializer, **PROBLEMS},
        description="Sign the chain head now (200 with the existing one if it has not moved).",
    )
    def post(self, request: ApiRequest) -> HttpResponse:
        try:
            checkpoint, created = checkpoint_issue(organization_id=request.organization.pk)
        except CheckpointError as exc:
            raise conflict(str(exc), type_slug="audit-chain-empty") from None
        return HttpResponse(
            CheckpointSerializer(checkpoint).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class CheckpointDetailView(KeyedAPIView):
    required_scope = Scope.ESCALATIONS_READ

    @extend_schema(
        operation_id="audit_checkpoints_read",
        responses={200: CheckpointSerializer, **PROBLEMS},
        description="One checkpoint by id, or `latest`.",
    )
    def get(self, request: ApiRequest, public_id: str) -> HttpResponse:
        if public_id == "latest":
            checkpoint = _checkpoints(request).first()
            if checkpoint is None:
                raise Http404
        else:
            checkpoint = get_for_organization_or_404(
                Checkpoint, request.organization, public_id, prefix="ckp"
            )
        return HttpResponse(CheckpointSerializer(checkpoint).data)


class ExportView(KeyedAPIView):
    required_scope = Scope.ESCALATIONS_READ

    @extend_schema(
        operation_id="exports_read",
        parameters=[
            OpenApiParameter(
                "export_format", str, OpenApiParameter.PATH, enum=list(exports.FORMATS)
            ),
            OpenApiParameter("agent", str, description="Only this agent's (`agt_…`)."),
            OpenApiParameter("action", str, description="Only this action name."),
            OpenApiParameter("outcome", str, enum=list(exports.TERMINAL)),
            OpenApiParameter(
                "since",
                OpenApiTypes.DATE,
                description="Decided at or after (a date-time works too).",
            ),
            OpenApiParameter(
                "until", OpenApiTypes.DATE, description="Decided before (a date-time works too)."
            ),
        ],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.STR, description="JSON Lines, streamed (docs/exports.md)."
            ),
            **PROBLEMS,
        },
        description="`chat`, `preference` or `decisions` as JSON Lines (see docs/exports.md).",
    )
    def get(self, request: ApiRequest, export_format: str) -> StreamingHttpResponse:
        if export_format not in exports.FORMATS:
            raise Http404
        try:
            filters = exports.ExportFilters.parse(request.query_params.dict())
        except exports.ExportError as exc:
            raise invalid_fields(exc.errors) from None
        lines = exports.export_lines(
            organization=request.organization, export_format=export_format, filters=filters
        )
        return streaming_response(
            request._request,
            lines,
            content_type="application/x-ndjson",
            filename=f"{request.organization.slug}-{export_format}.jsonl",
        )


class EvidenceBundleView(KeyedAPIView):
    """The evidence bundle needs a member's personal key: it is the organization's whole record,
    people included, and agents have no business exporting it."""

    required_scope = Scope.ESCALATIONS_READ

    @extend_schema(
        operation_id="audit_bundle",
        parameters=[
            OpenApiParameter(
                "since", OpenApiTypes.DATE, required=True, description="A date-time works too."
            ),
            OpenApiParameter(
                "until", OpenApiTypes.DATE, required=True, description="A date-time works too."
            ),
        ],
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The evidence bundle, streamed (docs/audit.md)."
            ),
            **PROBLEMS,
        },
        description="Escalations created in [since, until) with their audit chain segment, "
        "checkpoints and keys, as one ZIP; check it with `awaithuman-verify`.",
    )
    def get(self, request: ApiRequest) -> StreamingHttpResponse:
        membership = request.membership
        if membership is None or membership.role not in BUNDLE_ROLES:
            raise forbidden("Evidence bundles are for admins and owners, with a personal key.")
        require_feature(request.organization, FEATURE_AUDIT_EXPORT)
        try:
            since, until = bundles.bundle_range(request.query_params.dict())
        except exports.ExportError as exc:
            raise invalid_fields(exc.errors) from None
        return bundles.bundle_response(request._request, request.organization, since, until)


BUNDLE_ROLES = ("admin", "owner")
