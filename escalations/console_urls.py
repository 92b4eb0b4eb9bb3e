"""The operator console's queue and decision screen, mounted at the site root."""

from __future__ import annotations

from django.urls import path

from . import history_views, views

app_name = "queue"

urlpatterns = [
    path("", views.queue, name="index"),
    path("escalations/<str:public_id>/", views.escalation_detail, name="escalation"),
    path("escalations/<str:public_id>/claim", views.escalation_claim_view, name="claim"),
    path(
        "escalations/<str:public_id>/release",
        views.escalation_release_view,
        name="release",
    ),
    path("escalations/<str:public_id>/respond", views.escalation_respond, name="respond"),
    path("escalations/<str:public_id>/redact", views.escalation_redact_view, name="redact"),
    path("history/", history_views.history_list, name="history"),
    path("history/export", history_views.history_export, name="history_export"),
    path("org/effects/", views.effects, name="effects"),
    path("org/evidence/", views.evidence, name="evidence"),
]
