"""Console pages for the organization: agents and keys, personal keys, members and invitations,
settings, the audit log; the invitation link. Two-factor pages are ``tenants.two_factor``.

Every query starts from ``request.organization`` (set by ``CurrentOrganizationMiddleware``), so
another organization's agent, key, member or invitation is a 404. Roles: every member reads;
owners and admins manage members, agents, keys and settings; only owners delete the
organization. Writes go through ``tenants.services`` and ``tenants.memberships``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import quote

from allauth.account.adapter import get_adapter
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import SimpleLazyObject
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from audit.models import AuditEvent
from audit.services import audit_verify_chain

from . import hooks, memberships, services
from .console import organization_switch, role_required
from .forms import (
    INVITATION_SESSION_KEY,
    AgentApiKeyForm,
    AgentForm,
    ApiKeyForm,
    InvitationForm,
    KeyRollForm,
    OrganizationDeleteForm,
    OrganizationSettingsForm,
    RoleForm,
)
from .lookups import get_for_organization_or_404
from .models import PERSONAL_SCOPES, Agent, ApiKey, Membership, Scope
from .requests import OrganizationRequest

MANAGERS = tuple(Membership.MANAGING_ROLES)
OWNER = Membership.Role.OWNER
AUDIT_PAGE_SIZE = 50


def console_context(request: HttpRequest) -> dict[str, Any]:
    """Template context for the header: the signed-in person's organizations (for the switcher),
    queried only if a template uses them."""

    def memberships() -> list[Membership]:
        if not request.user.is_authenticated:
            return []
        return list(
            Membership.objects.select_related("organization")
            .filter(user=request.user)
            .order_by("organization__name")
        )

    return {"console_memberships": SimpleLazyObject(memberships)}


def _actor(request: OrganizationRequest) -> dict[str, Any]:
    return request.membership.as_actor()


def safe_next(request: HttpRequest, default: str = "/") -> str:
    """The ``next`` address of the request if it stays on this site, else ``default``."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


# --- Organization switcher ------------------------------------------------------------------------


@require_POST
def switch(request: HttpRequest) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect("account_login")
    membership = organization_switch(request, request.POST.get("organization", ""))
    if membership is None:
        raise Http404
    messages.success(request, f"You are now working in {membership.organization.name}.")
    return HttpResponseRedirect(safe_next(request))


# --- Agents and their keys ------------------------------------------------------------------------


@role_required()
@require_http_methods(["GET", "POST"])
def agents(request: OrganizationRequest) -> HttpResponse:
    organization = request.organization
    form = AgentForm(organization=organization)
    if request.method == "POST":
        if request.membership.role not in MANAGERS:
            raise PermissionDenied
        form = AgentForm(request.POST, organization=organization)
        if form.is_valid():
            agent = services.agent_create(
                organization=organization,
                name=form.cleaned_data["name"],
                description=form.cleaned_data["description"],
                actor=_actor(request),
            )
            messages.success(request, f"Agent {agent.name} created. Give it an API key.")
            return redirect("agent", public_id=agent.public_id)
    rows = organization.agents.order_by("name")
    return render(request, "tenants/agents.html", {"agents": rows, "form": form})


@role_required()
@require_http_methods(["GET", "POST"])
def agent(request: OrganizationRequest, public_id: str) -> HttpResponse:
    organization = request.organization
    agent = get_for_organization_or_404(Agent, organization, public_id, prefix="agt")
    form = AgentApiKeyForm()
    issued = None
    if request.method == "POST":
        if request.membership.role not in MANAGERS:
            raise PermissionDenied
        form = AgentApiKeyForm(request.POST)
        if form.is_valid():
            issued = services.api_key_create(
                organization=organization,
                agent=agent,
                scopes=form.cleaned_data["scopes"],
                name=form.cleaned_data["name"],
                mode=form.cleaned_data["mode"],
                expires_in_days=form.cleaned_data["expires_in_days"],
                actor=_actor(request),
            )
            form = AgentApiKeyForm()
    return _agent_page(request, agent, form=form, issued=issued)


def _agent_page(
    request: OrganizationRequest,
    agent: Any,
    *,
    form: AgentApiKeyForm | None = None,
    issued: services.IssuedKey | None = None,
) -> HttpResponse:
    return render(
        request,
        "tenants/agent.html",
        {
            "agent": agent,
            "keys": agent.api_keys.order_by("-created_at"),
            "form": form or AgentApiKeyForm(),
            "roll_form": KeyRollForm(auto_id=False),
            "issued": issued,
            # The address this page was reached at, so the ready curl works on any port.
            "api_base": request.build_absolute_uri("/").rstrip("/"),
            "now": timezone.now(),
            "can_manage": request.membership.role in MANAGERS,
        },
    )


@role_required(*MANAGERS)
@require_POST
def agent_disable(request: OrganizationRequest, public_id: str) -> HttpResponse:
    organization = request.organization
    agent = get_for_organization_or_404(Agent, organization, public_id, prefix="agt")
    services.agent_disable(agent=agent, actor=_actor(request))
    messages.success(request, f"Agent {agent.name} is disabled: all its keys are refused.")
    return redirect("agent", public_id=agent.public_id)


@role_required(*MANAGERS)
@require_POST
def agent_enable(request: OrganizationRequest, public_id: str) -> HttpResponse:
    organization = request.organization
    agent = get_for_organization_or_404(Agent, organization, public_id, prefix="agt")
    services.agent_enable(agent=agent, actor=_actor(request))
    messages.success(request, f"Agent {agent.name} is enabled again.")
    return redirect("agent", public_id=agent.public_id)


@role_required(*MANAGERS)
@require_POST
def agent_key_roll(request: OrganizationRequest, public_id: str, key_id: str) -> HttpResponse:
    """A new key replaces this one; the old one keeps working for the chosen grace period."""
    organization = request.organization
    agent = get_for_organization_or_404(Agent, organization, public_id, prefix="agt")
    api_key = _key_or_404(agent.api_keys.all(), key_id)
    form = KeyRollForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose when the old key stops working.")
        return redirect("agent", public_id=agent.public_id)
    try:
        issued = services.api_key_roll(
            api_key=api_key,
            grace=timedelta(hours=form.cleaned_data["grace_hours"]),
            actor=_actor(request),
        )
    except services.KeyRollRefused as exc:
        messages.error(request, str(exc))
        return redirect("agent", public_id=agent.public_id)
    messages.success(request, f"Key {api_key} rolled: switch to the new key below.")
    return _agent_page(request, agent, issued=issued)


@role_required(*MANAGERS)
@require_POST
def agent_key_revoke(request: OrganizationRequest, public_id: str, key_id: str) -> HttpResponse:
    organization = request.organization
    agent = get_for_organization_or_404(Agent, organization, public_id, prefix="agt")
    api_key = _key_or_404(agent.api_keys.all(), key_id)
    services.api_key_revoke(api_key=api_key, actor=_actor(request))
    messages.success(request, f"Key {api_key} revoked; it stops working at once.")
    return redirect("agent", public_id=agent.public_id)


def _key_or_404(queryset: QuerySet[ApiKey], key_id: str) -> ApiKey:
    if len(key_id) != 12 or not key_id.isalnum():
        raise Http404
    api_key = queryset.filter(key_id=key_id).first()
    if api_key is None:
        raise Http404
    return api_key


# --- Personal keys --------------------------------------------------------------------------------


def _personal_scopes(membership: Membership) -> list[str]:
    """Viewers may read through the API; answering needs a role that may answer."""
    if membership.can_answer:
        return sorted(PERSONAL_SCOPES)
    return [Scope.ESCALATIONS_READ]


@role_required()
@require_http_methods(["GET", "POST"])
def personal_keys(request: OrganizationRequest) -> HttpResponse:
    membership: Membership = request.membership
    form = ApiKeyForm()
    issued = None
    if request.method == "POST":
        form = ApiKeyForm(request.POST)
        if form.is_valid():
            issued = services.api_key_create(
                organization=membership.organization,
                membership=membership,
                scopes=_personal_scopes(membership),
                name=form.cleaned_data["name"],
                mode=form.cleaned_data["mode"],
                expires_in_days=form.cleaned_data["expires_in_days"],
                actor=_actor(request),
            )
            form = ApiKeyForm()
    return render(
        request,
        "tenants/personal_keys.html",
        {
            "keys": membership.api_keys.order_by("-created_at"),
            "form": form,
            "issued": issued,
            "scopes": _personal_scopes(membership),
            "now": timezone.now(),
        },
    )


@role_required()
@require_POST
def personal_key_revoke(request: OrganizationRequest, key_id: str) -> HttpResponse:
    membership: Membership = request.membership
    api_key = _key_or_404(membership.api_keys.all(), key_id)
    services.api_key_revoke(api_key=api_key, actor=_actor(request))
    messages.success(request, f"Key {api_key} revoked.")
    return redirect("personal_keys")


# --- Members and invitations ----------------------------------------------------------------------


@role_required()
@require_http_methods(["GET", "POST"])
def members(request: OrganizationRequest) -> HttpResponse:
    organization = request.organization
    membership: Membership = request.membership
    form = InvitationForm()
    invite_link = None
    if request.method == "POST":
        if membership.role not in MANAGERS:
            raise PermissionDenied
        form = InvitationForm(request.POST)
        if form.is_valid():
            try:
                issued = memberships.invitation_create(
                    organization=organization,
                    email=form.cleaned_data["email"],
                    role=form.cleaned_data["role"],
                    invited_by=membership,
                )
            except memberships.MembershipError as exc:
                form.add_error(None, str(exc))
            else:
                invite_link = request.build_absolute_uri(reverse("invitation", args=[issued.token]))
                messages.success(request, f"Invitation sent to {issued.invitation.email}.")
                form = InvitationForm()
    now = timezone.now()
    context = {
        "members": organization.memberships.select_related("user").order_by(
            "user__email", "created_at"
        ),
        "invitations": organization.invitations.filter(
            accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=now
        ).select_related("invited_by__user"),
        "form": form,
        "invite_link": invite_link,
        "roles": Membership.Role.choices,
        "can_manage": membership.role in MANAGERS,
    }
    return render(request, "tenants/members.html", context)


def _member_or_404(request: OrganizationRequest, public_id: str) -> Membership:
    organization = request.organization
    return get_for_organization_or_404(
        organization.memberships.select_related("user"), organization, public_id, prefix="mem"
    )


@role_required(*MANAGERS)
@require_POST
def member_role(request: OrganizationRequest, public_id: str) -> HttpResponse:
    member = _member_or_404(request, public_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose one of the roles.")
        return redirect("members")
    try:
        memberships.membership_change_role(
            membership=member,
            role=form.cleaned_data["role"],
            actor=request.membership,
        )
    except memberships.MembershipError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{member.user.email} is now {member.get_role_display()}.")
    return redirect("members")


@role_required(*MANAGERS)
@require_POST
def member_remove(request: OrganizationRequest, public_id: str) -> HttpResponse:
    member = _member_or_404(request, public_id)
    try:
        memberships.membership_remove(membership=member, actor=request.membership)
    except memberships.MembershipError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{member.user.email} no longer has access.")
    if member.user_id == request.user.pk:
        return redirect("/")
    return redirect("members")


@role_required(*MANAGERS)
@require_POST
def invitation_revoke(request: OrganizationRequest, public_id: str) -> HttpResponse:
    organization = request.organization
    invitation = get_for_organization_or_404(
        organization.invitations.all(), organization, public_id, prefix="inv"
    )
    memberships.invitation_revoke(invitation=invitation, actor=_actor(request))
    messages.success(request, f"Invitation to {invitation.email} withdrawn.")
    return redirect("members")


@require_http_methods(["GET", "POST"])
def invitation(request: HttpRequest, token: str) -> HttpResponse:
    """The link in the invitation e-mail. Signed out: remember the token and offer sign-up or
    sign-in (both come back here or join directly). Signed in: join with one click, unless the
    invitation is for another address."""
    found = memberships.invitation_for_token(token)
    refusal = None
    if found is None:
        refusal = memberships.InvitationRefused("invalid", "This invitation link is not valid.")
    else:
        email = request.user.email if request.user.is_authenticated else None
        try:
            memberships.invitation_check(found, email=email)
        except memberships.InvitationRefused as exc:
            refusal = exc
    if refusal is not None:
        request.session.pop(INVITATION_SESSION_KEY, None)
        status = {"invalid": 404, "foreign": 403}.get(refusal.reason, 410)
        return render(
            request,
            "tenants/invitation.html",
            {"refusal": refusal, "invitation": found},
            status=status,
        )
    assert found is not None
    if not request.user.is_authenticated:
        request.session[INVITATION_SESSION_KEY] = token
        # Holding the link proves the address: an account made from it needs no extra e-mail.
        get_adapter(request).stash_verified_email(request, found.email)
        has_account = get_user_model().objects.filter(email__iexact=found.email).exists()
        here = quote(request.path)
        return render(
            request,
            "tenants/invitation.html",
            {"invitation": found, "has_account": has_account, "next": here},
        )
    if request.method == "POST":
        try:
            membership = memberships.invitation_accept(token=token, user=request.user)
        except memberships.InvitationRefused as exc:
            return render(
                request,
                "tenants/invitation.html",
                {"refusal": exc, "invitation": found},
                status=409,
            )
        request.session.pop(INVITATION_SESSION_KEY, None)
        organization_switch(request, membership.organization.public_id)
        messages.success(
            request,
            f"Welcome to {membership.organization.name}: you are {membership.get_role_display()}.",
        )
        return redirect("/")
    return render(request, "tenants/invitation.html", {"invitation": found, "signed_in": True})


# --- Organization settings, deletion --------------------------------------------------------------


@role_required(*MANAGERS)
@require_http_methods(["GET", "POST"])
def settings_page(request: OrganizationRequest) -> HttpResponse:
    organization = request.organization
    form = OrganizationSettingsForm(instance=organization)
    if request.method == "POST":
        form = OrganizationSettingsForm(request.POST, instance=_fresh(organization))
        if form.is_valid():
            services.organization_update(
                organization=_fresh(organization),
                name=form.cleaned_data["name"],
                require_2fa=form.cleaned_data["require_2fa"],
                reject_reason_required=form.cleaned_data["reject_reason_required"],
                payload_retention_days=form.cleaned_data["payload_retention_days"],
                checkpoint_email=form.cleaned_data["checkpoint_email"],
                actor=_actor(request),
            )
            messages.success(request, "Settings saved.")
            return redirect("organization_settings")
    return render(
        request,
        "tenants/settings.html",
        {
            "form": form,
            "delete_form": OrganizationDeleteForm(organization=organization),
            "is_owner": request.membership.role == OWNER,
        },
    )


def _fresh(obj: Model) -> Any:
    return type(obj)._default_manager.get(pk=obj.pk)


@role_required(OWNER)
@require_POST
def organization_delete(request: OrganizationRequest) -> HttpResponse:
    organization = request.organization
    form = OrganizationDeleteForm(request.POST, organization=organization)
    if not form.is_valid():
        return render(
            request,
            "tenants/settings.html",
            {
                "form": OrganizationSettingsForm(instance=organization),
                "delete_form": form,
                "is_owner": True,
            },
            status=400,
        )
    name = organization.name
    services.organization_delete(organization=organization, actor=_actor(request))
    request.session.pop("organization", None)
    messages.success(request, f"{name} and everything in it has been deleted.")
    return redirect("/")


# --- Audit log ------------------------------------------------------------------------------------


@role_required()
@require_GET
def audit_log(request: OrganizationRequest) -> HttpResponse:
    organization = request.organization
    events = AuditEvent.objects.filter(organization_id=organization.pk).order_by("-id")
    action = request.GET.get("action", "").strip()[:64]
    target = request.GET.get("target", "").strip()[:64]
    if action:
        # "api_key" shows every api_key.* event; "api_key.created" only those.
        events = events.filter(action__startswith=action)
    if target:
        events = events.filter(target=target)
    page = Paginator(events, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    links = hooks.audit_target_links(organization, [event.target for event in page if event.target])
    rows = [(event, links.get(event.target)) for event in page]
    actions = (
        AuditEvent.objects.filter(organization_id=organization.pk)
        .order_by("action")
        .values_list("action", flat=True)
        .distinct()
    )
    query = "&".join(
        f"{name}={quote(value)}"
        for name, value in (("action", action), ("target", target))
        if value
    )
    return render(
        request,
        "tenants/audit_log.html",
        {
            "page": page,
            "rows": rows,
            "action": action,
            "target": target,
            "actions": actions,
            "query": query,
            "chain": audit_verify_chain(organization_id=organization.pk),
        },
    )
