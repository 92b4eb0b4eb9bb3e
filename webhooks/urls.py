"""Agent API routes of callbacks, under /api/v1/ (included from awaithuman/urls.py)."""

from __future__ import annotations

from django.urls import path

from . import api

urlpatterns = [
    path(
        "escalations/<str:public_id>/callbacks",
        api.CallbackListView.as_view(),
        name="escalation-callbacks",
    ),
    path(
        "escalations/<str:public_id>/callbacks/replay",
        api.CallbackReplayView.as_view(),
        name="escalation-callbacks-replay",
    ),
]
