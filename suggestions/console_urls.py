"""Console URLs of policy suggestions (``suggestions.views``)."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("org/suggestions/", views.suggestions, name="suggestions"),
    path(
        "org/suggestions/<str:fingerprint>/draft/",
        views.suggestion_draft,
        name="suggestion_draft",
    ),
    path(
        "org/suggestions/<str:fingerprint>/dismiss/",
        views.suggestion_dismiss,
        name="suggestion_dismiss",
    ),
]
