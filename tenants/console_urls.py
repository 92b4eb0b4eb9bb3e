"""The console pages of the tenants app: /org/… management and billing, /account/2fa/…,
/invitations/…."""

from __future__ import annotations

from django.urls import path

from . import billing_views, two_factor, views

urlpatterns = [
    path("account/2fa/", two_factor.two_factor, name="two_factor"),
    path("account/2fa/setup/", two_factor.two_factor_setup, name="two_factor_setup"),
    path("account/2fa/verify/", two_factor.two_factor_verify, name="two_factor_verify"),
    path(
        "account/2fa/recovery-codes/",
        two_factor.two_factor_recovery_codes,
        name="two_factor_recovery_codes",
    ),
    path("account/2fa/disable/", two_factor.two_factor_disable, name="two_factor_disable"),
    path("invitations/<str:token>/", views.invitation, name="invitation"),
    path("org/switch/", views.switch, name="organization_switch"),
    path("org/agents/", views.agents, name="agents"),
    path("org/agents/<str:public_id>/", views.agent, name="agent"),
    path("org/agents/<str:public_id>/disable/", views.agent_disable, name="agent_disable"),
    path("org/agents/<str:public_id>/enable/", views.agent_enable, name="agent_enable"),
    path(
        "org/agents/<str:public_id>/keys/<str:key_id>/roll/",
        views.agent_key_roll,
        name="agent_key_roll",
    ),
    path(
        "org/agents/<str:public_id>/keys/<str:key_id>/revoke/",
        views.agent_key_revoke,
        name="agent_key_revoke",
    ),
    path("org/keys/", views.personal_keys, name="personal_keys"),
    path("org/keys/<str:key_id>/revoke/", views.personal_key_revoke, name="personal_key_revoke"),
    path("org/members/", views.members, name="members"),
    path("org/members/<str:public_id>/role/", views.member_role, name="member_role"),
    path("org/members/<str:public_id>/remove/", views.member_remove, name="member_remove"),
    path(
        "org/invitations/<str:public_id>/revoke/",
        views.invitation_revoke,
        name="invitation_revoke",
    ),
    path("org/settings/", views.settings_page, name="organization_settings"),
    path("org/delete/", views.organization_delete, name="organization_delete"),
    path("org/audit/", views.audit_log, name="audit_log"),
    path("org/billing/", billing_views.billing_page, name="billing"),
    path("org/billing/checkout/", billing_views.billing_checkout, name="billing_checkout"),
    path("org/billing/portal/", billing_views.billing_portal, name="billing_portal"),
    path("org/billing/return/", billing_views.billing_return, name="billing_return"),
]
