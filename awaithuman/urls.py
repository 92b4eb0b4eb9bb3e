from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from escalations import overview, receipts

from . import health, metrics

handler404 = "awaithuman.problems.not_found_view"
handler500 = "awaithuman.problems.server_error_view"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path(".well-known/jwks.json", receipts.jwks_view, name="jwks"),
    path("api/v1/", include("escalations.urls")),
    path("api/v1/", include("webhooks.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as its own file, and api/docs.html its
    # page styles, for the Content-Security-Policy (no inline script or style).
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="api/docs.html"),
        name="api-docs",
    ),
    path("hooks/", include("notifications.urls")),
    path("admin/", admin.site.urls),
    path("", include("tenants.urls")),
    path("", include("tenants.console_urls")),
    path("org/overview/", overview.overview, name="overview"),
    path("org/overview/pending.json", overview.overview_pending, name="overview_pending"),
    path("account/", include("allauth.urls")),
    path("", include("escalations.console_urls")),
    path("", include("notifications.console_urls")),
    path("", include("webhooks.console_urls")),
    path("", include("suggestions.console_urls")),
]
