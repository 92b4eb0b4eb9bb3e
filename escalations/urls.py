from __future__ import annotations

from django.urls import path

from . import api, audit_api, insights_api

urlpatterns = [
    path("escalations", api.EscalationListCreateView.as_view(), name="escalations"),
    path("escalations/export", api.EscalationExportView.as_view(), name="escalations-export"),
    path("escalations/<str:public_id>", api.EscalationDetailView.as_view(), name="escalation"),
    path(
        "escalations/<str:public_id>/cancel",
        api.EscalationCancelView.as_view(),
        name="escalation-cancel",
    ),
    path(
        "escalations/<str:public_id>/claim",
        api.EscalationClaimView.as_view(),
        name="escalation-claim",
    ),
    path(
        "escalations/<str:public_id>/responses",
        api.ResponseCreateView.as_view(),
        name="escalation-responses",
    ),
    path("policies", api.PolicyListView.as_view(), name="policies"),
    path("audit/checkpoints", audit_api.CheckpointListView.as_view(), name="audit-checkpoints"),
    path(
        "audit/checkpoints/<str:public_id>",
        audit_api.CheckpointDetailView.as_view(),
        name="audit-checkpoint",
    ),
    path("audit/bundle", audit_api.EvidenceBundleView.as_view(), name="audit-bundle"),
    path("exports/<str:export_format>", audit_api.ExportView.as_view(), name="export"),
    path("insights", insights_api.InsightsView.as_view(), name="insights"),
    path("policies/evaluate", api.PolicyEvaluateView.as_view(), name="policies-evaluate"),
]
