"""Django admin: escalations (read-only) and the policy editor org admins use.

The policy editor is tenant-scoped (``OrganizationScopedAdmin``): an org admin sees and saves
only their organization's policies, and can only pick that organization's agents, members and
teams as targets. Every save is audited with a before/after diff in the admin's transaction.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path
from django.utils.html import escape

from audit.services import audit_record
from tenants.admin_site import (
    OrganizationScopedAdmin,
    OrganizationScopedInline,
    admin_actor,
    managed_organizations,
)
from tenants.billing import FEATURE_QUORUM, channel_refusal, feature_refusal
from tenants.models import Membership, Organization

from .models import CHANNEL_CHOICES, Escalation, OutboxEvent, Policy, PolicyLevel, Response
from .outbox import outbox_retry
from .policies import ConditionError, condition_check, policy_dry_run, policy_snapshot

CONDITION_HELP = """CEL expression over the escalation; empty matches everything. Variables:
action.name, action.arguments.<key>, kind ("approval"|"question"), priority
("low"|"normal"|"high"|"urgent"), agent.name, agent.id, metadata.<key>,
context.reasoning_length, context.tool_call_count, context.message_count, now (UTC timestamp).
Examples: action.name == "issue_refund" && action.arguments.amount > 500 ·
has(action.arguments.amount) && action.arguments.amount <= 100 ·
priority in ["high", "urgent"] · now.getHours() < 9 || now.getHours() >= 17"""


class ResponseInline(admin.TabularInline):
    model = Response
    extra = 0
    can_delete = False
    fields = ("membership", "outcome", "payload", "comment", "channel", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Escalation)
class EscalationAdmin(admin.ModelAdmin):
    """Read-only: escalations change state only through the API and console, which audit it."""

    list_display = (
        "public_id",
        "title",
        "organization",
        "agent",
        "kind",
        "status",
        "priority",
        "created_at",
    )
    list_filter = ("status", "kind", "priority", "organization")
    search_fields = ("public_id", "title", "external_id")
    inlines = [ResponseInline]

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [field.name for field in Escalation._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class PolicyLevelForm(forms.ModelForm):
    roles = forms.MultipleChoiceField(
        choices=Membership.Role.choices, widget=forms.CheckboxSelectMultiple, required=False
    )
    channels = forms.MultipleChoiceField(
        # Organization webhooks get every event they subscribe to; they are not a person's channel.
        choices=[choice for choice in CHANNEL_CHOICES if choice[0] != "webhook"],
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="None ticked: each person's own channel preferences.",
    )

    class Meta:
        model = PolicyLevel
        fields = (
            "position",
            "all_operators",
            "roles",
            "members",
            "teams",
            "channels",
            "wait_seconds",
            "reminder_seconds",
        )


class PolicyLevelFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        organization_id = self.instance.organization_id
        for form in self.forms:
            if not hasattr(form, "cleaned_data") or form.cleaned_data.get("DELETE"):
                continue
            for field in ("members", "teams"):
                foreign = [
                    item
                    for item in form.cleaned_data.get(field) or []
                    if item.organization_id != organization_id
                ]
                if foreign:
                    form.add_error(field, "Targets must belong to the policy's organization.")
            channels = form.cleaned_data.get("channels") or []
            if organization_id and (
                refusal := channel_refusal(self.instance.organization, channels)
            ):
                form.add_error("channels", refusal)


class PolicyLevelInline(OrganizationScopedInline, admin.StackedInline):
    model = PolicyLevel
    form = PolicyLevelForm
    formset = PolicyLevelFormSet
    extra = 0
    ordering = ("position",)
    filter_horizontal = ("members", "teams")


class PolicyForm(forms.ModelForm):
    class Meta:
        model = Policy
        fields = (
            "organization",
            "name",
            "enabled",
            "priority",
            "condition",
            "outcome",
            "agents",
            "timeout_seconds",
            "on_timeout",
            "required_approvals",
            "repeat",
        )
        widgets = {"condition": forms.Textarea(attrs={"rows": 3, "cols": 100})}
        # Django admin renders help text as HTML; the placeholders (<key>) are text.
        help_texts = {"condition": escape(CONDITION_HELP)}

    def clean_condition(self) -> str:
        condition = self.cleaned_data["condition"]
        try:
            condition_check(condition)
        except ConditionError as exc:
            raise forms.ValidationError(str(exc)) from None
        return condition

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        organization = cleaned.get("organization")
        foreign = [
            agent
            for agent in cleaned.get("agents") or []
            if organization is None or agent.organization_id != organization.pk
        ]
        if foreign:
            self.add_error("agents", "Agents must belong to the policy's organization.")
        quorum = (cleaned.get("required_approvals") or 1) > 1
        if organization and quorum and (refusal := feature_refusal(organization, FEATURE_QUORUM)):
            self.add_error("required_approvals", refusal)
        return cleaned


def _audit_state(policy: Policy) -> dict[str, Any]:
    return {
        **policy_snapshot(policy),
        "enabled": policy.enabled,
        "priority": policy.priority,
        "agents": sorted(agent.public_id for agent in policy.agents.all()),
    }


@admin.register(Policy)
class PolicyAdmin(OrganizationScopedAdmin):
    form = PolicyForm
    inlines = [PolicyLevelInline]
    list_display = ("name", "organization", "enabled", "priority", "outcome", "condition")
    list_editable = ("priority", "enabled")
    list_filter = ("organization", "enabled", "outcome")
    search_fields = ("name", "condition", "public_id")
    filter_horizontal = ("agents",)
    change_list_template = "admin/escalations/policy/change_list.html"

    def get_urls(self) -> list[Any]:
        dry_run = self.admin_site.admin_view(self.dry_run_view)
        return [path("dry-run/", dry_run, name="escalations_policy_dry_run"), *super().get_urls()]

    def save_model(self, request: HttpRequest, obj: Policy, form: Any, change: bool) -> None:
        before = Policy.objects.filter(pk=obj.pk).first() if change else None
        request._policy_before = _audit_state(before) if before else None  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        policy = form.instance
        before = getattr(request, "_policy_before", None)
        after = _audit_state(policy)
        changed = sorted(key for key in after if before is None or before.get(key) != after[key])
        audit_record(
            organization_id=policy.organization_id,
            action="policy.updated" if change else "policy.created",
            actor=admin_actor(request, policy.organization),
            target=policy.public_id,
            data={"changed": changed, "before": before, "after": after},
        )

    def delete_model(self, request: HttpRequest, obj: Policy) -> None:
        with transaction.atomic():
            audit_record(
                organization_id=obj.organization_id,
                action="policy.deleted",
                actor=admin_actor(request, obj.organization),
                target=obj.public_id,
                data={"before": _audit_state(obj)},
            )
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for policy in queryset:
            self.delete_model(request, policy)

    def dry_run_view(self, request: HttpRequest) -> HttpResponse:
        """Which escalations a draft condition would match: a pasted sample or the last 50."""
        organizations = (
            Organization.objects.all()
            if request.user.is_superuser
            else managed_organizations(request)
        )
        policy = None
        if policy_pk := request.GET.get("policy"):
            policy = self.get_queryset(request).filter(pk=policy_pk).first()
        data = request.POST if request.method == "POST" else request.GET
        condition = data.get("condition", policy.condition if policy else "")
        organization_pk = data.get("organization") or (policy.organization_id if policy else None)
        organization = (
            organizations.filter(pk=organization_pk).first() if organization_pk else None
        ) or organizations.first()
        sample = data.get("sample", "")
        result = None
        if request.method == "POST" and organization is not None:
            sample_data = None
            sample_error = ""
            if sample.strip():
                try:
                    sample_data = json.loads(sample)
                    if not isinstance(sample_data, dict):
                        raise ValueError("the sample must be a JSON object")
                except ValueError as exc:
                    sample_error = f"Sample is not a JSON object: {exc}"
            result = {
                "sample_error": sample_error,
                **policy_dry_run(
                    organization=organization, condition=condition, sample=sample_data
                ),
            }
        context = {
            **self.admin_site.each_context(request),
            "title": "Dry run a policy condition",
            "opts": self.model._meta,
            "organizations": organizations,
            "organization": organization,
            "condition": condition,
            "sample": sample,
            "result": result,
            "condition_help": CONDITION_HELP,
        }
        return render(request, "admin/escalations/policy/dry_run.html", context)


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    """Effects still owed, for the platform's operators: a parked row shows its last error and
    can be retried once its cause is fixed. Rows change only through the dispatcher."""

    list_display = ("id", "consumer", "event", "escalation", "attempts", "parked_at", "last_error")
    list_filter = ("consumer", "event", ("parked_at", admin.EmptyFieldListFilter))
    actions = ["retry"]

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [field.name for field in OutboxEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Retry now")
    def retry(self, request: HttpRequest, queryset: Any) -> None:
        retried = outbox_retry(
            ids=list(queryset.values_list("pk", flat=True)), actor=admin_actor(request, None)
        )
        self.message_user(request, f"{retried} event(s) are due again.")
