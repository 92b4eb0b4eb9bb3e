"""Console URLs of agent callbacks and organization webhooks (``webhooks.views``)."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("org/agents/<str:public_id>/callbacks/", views.agent_callbacks, name="agent_callbacks"),
    path(
        "org/agents/<str:public_id>/callbacks/secret/",
        views.agent_callback_secret_rotate,
        name="agent_callback_secret_rotate",
    ),
    path(
        "org/agents/<str:public_id>/callbacks/<str:message_id>/replay/",
        views.agent_callback_replay,
        name="agent_callback_replay",
    ),
    path("org/webhooks/", views.webhook_endpoints, name="webhook_endpoints"),
    path("org/webhooks/<str:public_id>/", views.webhook_endpoint, name="webhook_endpoint"),
    path(
        "org/webhooks/<str:public_id>/rotate/",
        views.webhook_endpoint_rotate,
        name="webhook_endpoint_rotate",
    ),
    path(
        "org/webhooks/<str:public_id>/enable/",
        views.webhook_endpoint_enable,
        name="webhook_endpoint_enable",
    ),
    path(
        "org/webhooks/<str:public_id>/delete/",
        views.webhook_endpoint_delete,
        name="webhook_endpoint_delete",
    ),
    path(
        "org/webhooks/<str:public_id>/messages/<str:message_id>/replay/",
        views.webhook_message_replay,
        name="webhook_message_replay",
    ),
]
