"""Console pages of signed outbound messages.

* ``/org/agents/<agt>/callbacks/`` — an agent's callback signing secret (created or rotated by
  owners and admins, shown once) and its recent callback deliveries with every attempt and a
  replay button. Linked from the agent page.
* ``/org/webhooks/`` — the organization's generic webhooks (owners and admins): add one (URL +
  events; its secret is shown once), rotate its secret, re-enable it after a 410, delete it, and
  see and replay its recent messages.

Every query starts from ``request.organization``: another organization's agent, endpoint or
message is a 404. Writes go through ``webhooks.services``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from awaithuman.problems import ApiProblem
from escalations.serializers import CallbackUrlField
from tenants.console import role_required
from tenants.lookups import get_for_organization_or_404
from tenants.models import Agent, Membership
from tenants.requests import OrganizationRequest

from . import services
from .models import AgentWebhookSecret, WebhookEndpoint, WebhookMessage

MANAGERS = tuple(Membership.MANAGING_ROLES)
RECENT = 50


def _agent(request: OrganizationRequest, public_id: str) -> Agent:
    return get_for_organization_or_404(Agent, request.organization, public_id, prefix="agt")


def _actor(request: OrganizationRequest) -> dict[str, Any]:
    return request.membership.as_actor()


def _recent(messages_: QuerySet[WebhookMessage]) -> QuerySet[WebhookMessage]:
    return messages_.select_related("escalation").prefetch_related("attempts")[:RECENT]


def _replay(request: OrganizationRequest, message: WebhookMessage) -> None:
    try:
        services.webhook_message_replay(message=message, actor=_actor(request))
    except ApiProblem as exc:
        messages.error(request, str(exc.detail))
    else:
        messages.success(request, f"Delivery {message.public_id} replayed.")


# --- An agent's callbacks ------------------------------------------------------------------------


@role_required()
@require_GET
def agent_callbacks(request: OrganizationRequest, public_id: str) -> HttpResponse:
    agent = _agent(request, public_id)
    return _agent_callbacks_page(request, agent)


def _agent_callbacks_page(
    request: OrganizationRequest, agent: Agent, new_secret: str | None = None
) -> HttpResponse:
    organization = request.organization
    recent = WebhookMessage.objects.filter(
        organization=organization, escalation__agent=agent, kind=WebhookMessage.Kind.CALLBACK
    )
    return render(
        request,
        "webhooks/agent_callbacks.html",
        {
            "agent": agent,
            "secret": AgentWebhookSecret.objects.filter(agent=agent).first(),
            "new_secret": new_secret,
            "disabled_endpoints": agent.callback_endpoints.exclude(disabled_at=None),
            "callback_messages": _recent(recent),
            "can_manage": request.membership.role in MANAGERS,
        },
    )


@role_required(*MANAGERS)
@require_POST
def agent_callback_secret_rotate(request: OrganizationRequest, public_id: str) -> HttpResponse:
    agent = _agent(request, public_id)
    plaintext = services.agent_webhook_secret_rotate(agent=agent, actor=_actor(request))
    return _agent_callbacks_page(request, agent, new_secret=plaintext)


@role_required(*MANAGERS)
@require_POST
def agent_callback_replay(
    request: OrganizationRequest, public_id: str, message_id: str
) -> HttpResponse:
    agent = _agent(request, public_id)
    message = get_for_organization_or_404(
        WebhookMessage.objects.filter(escalation__agent=agent, kind=WebhookMessage.Kind.CALLBACK),
        request.organization,
        message_id,
        prefix="msg",
    )
    _replay(request, message)
    return redirect("agent_callbacks", public_id=agent.public_id)


# --- Organization webhooks -----------------------------------------------------------------------


class WebhookEndpointForm(forms.Form):
    url = forms.CharField(label="URL", max_length=2000)
    events = forms.MultipleChoiceField(
        choices=WebhookEndpoint.Event.choices, widget=forms.CheckboxSelectMultiple
    )
    description = forms.CharField(max_length=200, required=False)

    def clean_url(self) -> str:
        from rest_framework.exceptions import ValidationError

        try:
            return CallbackUrlField().to_internal_value(self.cleaned_data["url"])
        except ValidationError:
            raise forms.ValidationError("Enter an http(s) URL with a host.") from None


def _endpoints(request: OrganizationRequest) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(organization=request.organization)


def _endpoint(request: OrganizationRequest, public_id: str) -> WebhookEndpoint:
    return get_for_organization_or_404(
        WebhookEndpoint, request.organization, public_id, prefix="whk"
    )


@role_required(*MANAGERS)
@require_http_methods(["GET", "POST"])
def webhook_endpoints(request: OrganizationRequest) -> HttpResponse:
    form = WebhookEndpointForm()
    if request.method == "POST":
        form = WebhookEndpointForm(request.POST)
        if form.is_valid():
            endpoint, plaintext = services.webhook_endpoint_create(
                organization=request.organization,  # type: ignore[attr-defined]
                url=form.cleaned_data["url"],
                events=form.cleaned_data["events"],
                description=form.cleaned_data["description"],
                actor=_actor(request),
            )
            return _endpoint_page(request, endpoint, new_secret=plaintext)
    return render(
        request, "webhooks/webhooks.html", {"endpoints": _endpoints(request), "form": form}
    )


def _endpoint_page(
    request: HttpRequest, endpoint: WebhookEndpoint, new_secret: str | None = None
) -> HttpResponse:
    return render(
        request,
        "webhooks/webhook.html",
        {
            "endpoint": endpoint,
            "new_secret": new_secret,
            "webhook_messages": _recent(endpoint.messages.all()),
        },
    )


@role_required(*MANAGERS)
@require_GET
def webhook_endpoint(request: OrganizationRequest, public_id: str) -> HttpResponse:
    return _endpoint_page(request, _endpoint(request, public_id))


@role_required(*MANAGERS)
@require_POST
def webhook_endpoint_rotate(request: OrganizationRequest, public_id: str) -> HttpResponse:
    endpoint = _endpoint(request, public_id)
    plaintext = services.webhook_endpoint_rotate_secret(endpoint=endpoint, actor=_actor(request))
    endpoint.refresh_from_db()
    return _endpoint_page(request, endpoint, new_secret=plaintext)


@role_required(*MANAGERS)
@require_POST
def webhook_endpoint_enable(request: OrganizationRequest, public_id: str) -> HttpResponse:
    endpoint = _endpoint(request, public_id)
    services.webhook_endpoint_enable(endpoint=endpoint, actor=_actor(request))
    messages.success(request, "Webhook enabled again.")
    return redirect("webhook_endpoint", public_id=endpoint.public_id)


@role_required(*MANAGERS)
@require_POST
def webhook_endpoint_delete(request: OrganizationRequest, public_id: str) -> HttpResponse:
    endpoint = _endpoint(request, public_id)
    services.webhook_endpoint_delete(endpoint=endpoint, actor=_actor(request))
    messages.success(request, f"Webhook {endpoint.url} deleted.")
    return redirect("webhook_endpoints")


@role_required(*MANAGERS)
@require_POST
def webhook_message_replay(
    request: OrganizationRequest, public_id: str, message_id: str
) -> HttpResponse:
    endpoint = _endpoint(request, public_id)
    _replay(
        request,
        get_for_organization_or_404(
            endpoint.messages.all(), request.organization, message_id, prefix="msg"
        ),
    )
    return redirect("webhook_endpoint", public_id=endpoint.public_id)
