"""Console forms: the sign-up form's organization part, members, agents, keys, settings, codes."""

from __future__ import annotations

from typing import Any

from allauth.core import context as allauth_context
from django import forms
from django.contrib.auth.models import User
from django.http import HttpRequest

from .memberships import InvitationRefused, invitation_accept, invitation_for_token
from .models import AGENT_SCOPES, ApiKey, Invitation, Membership, Organization
from .services import organization_create

INVITATION_SESSION_KEY = "invitation_token"


def pending_invitation(request: HttpRequest | None) -> Invitation | None:
    """The still-usable invitation whose link this browser opened before signing up/in."""
    if request is None or not hasattr(request, "session"):
        return None
    invitation = invitation_for_token(request.session.get(INVITATION_SESSION_KEY, ""))
    return invitation if invitation is not None and invitation.is_pending else None


class SignupForm(forms.Form):
    """allauth's ``ACCOUNT_SIGNUP_FORM_CLASS``: sign-up either creates an organization (the
    person becomes its owner) or, with an invitation link opened in this browser, joins the
    inviting organization with the invited e-mail address."""

    organization = forms.CharField(
        label="Organization name",
        max_length=200,
        widget=forms.TextInput(attrs={"autocomplete": "organization", "placeholder": "Acme Inc."}),
    )
    field_order = ["organization", "email", "password1", "password2"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.invitation = pending_invitation(allauth_context.request)
        if self.invitation is not None:
            del self.fields["organization"]
            self.initial.setdefault("email", self.invitation.email)

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        email = cleaned.get("email")
        if self.invitation is not None and email and not self.invitation.email_matches(email):
            self.add_error(
                "email",
                f"This invitation is for {self.invitation.email}. Sign up with that address, "
                "or ask for an invitation to this one.",
            )
        return cleaned

    def signup(self, request: HttpRequest, user: User) -> None:
        if self.invitation is not None:
            token = request.session.pop(INVITATION_SESSION_KEY, "")
            try:
                membership = invitation_accept(token=token, user=user)
            except InvitationRefused:
                # Used or withdrawn between the form and now: the account still exists, and
                # the invitation page explains what happened when they open the link again.
                return
            request.session["organization"] = membership.organization.public_id
            return
        organization = organization_create(name=self.cleaned_data["organization"], owner=user)
        request.session["organization"] = organization.public_id


class InvitationForm(forms.Form):
    email = forms.EmailField(widget=forms.EmailInput(attrs={"autocomplete": "off"}))
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.OPERATOR)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class AgentForm(forms.Form):
    name = forms.CharField(max_length=100)
    description = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if self.organization.agents.filter(name__iexact=name).exists():
            raise forms.ValidationError("An agent with this name already exists.")
        return name


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, required=False, help_text="What uses this key.")
    mode = forms.ChoiceField(choices=ApiKey.Mode.choices, initial=ApiKey.Mode.LIVE)
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=3650, required=False, help_text="Empty: never expires."
    )


class AgentApiKeyForm(ApiKeyForm):
    scopes = forms.MultipleChoiceField(
        choices=[(scope.value, scope.label) for scope in sorted(AGENT_SCOPES)],
        initial=sorted(AGENT_SCOPES),
        widget=forms.CheckboxSelectMultiple,
    )


class KeyRollForm(forms.Form):
    GRACE_CHOICES = [(0, "at once"), (1, "in 1 hour"), (24, "in 24 hours"), (168, "in 7 days")]

    grace_hours = forms.TypedChoiceField(
        label="The old key stops working",
        choices=GRACE_CHOICES,
        coerce=int,
        initial=24,
    )


class OrganizationSettingsForm(forms.ModelForm):
    class Meta:
        model = Organization
        fields = Organization.SETTINGS_FIELDS
        labels = {
            "payload_retention_days": "Keep escalation payloads for (days)",
            "checkpoint_email": "E-mail a daily audit checkpoint to",
            "require_2fa": "Require two-factor authentication for every member",
            "reject_reason_required": "Require a reason with every rejection",
        }


class OrganizationDeleteForm(forms.Form):
    confirm = forms.CharField(label="Type the organization's name to confirm")

    def __init__(self, *args: Any, organization: Organization, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.organization = organization

    def clean_confirm(self) -> str:
        if self.cleaned_data["confirm"].strip() != self.organization.name:
            raise forms.ValidationError("That is not the organization's name.")
        return self.cleaned_data["confirm"]


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code",
        max_length=16,
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "text",
                "autofocus": True,
                "spellcheck": "false",
            }
        ),
    )

    def clean_code(self) -> str:
        return "".join(self.cleaned_data["code"].split()).lower()
