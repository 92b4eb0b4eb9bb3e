"""Billing URLs: the console pages under /org/billing/ and Stripe's webhook."""

from __future__ import annotations

from django.urls import path

from . import billing_views

urlpatterns = [
    path("org/billing/", billing_views.billing_page, name="billing"),
    path("org/billing/checkout/", billing_views.billing_checkout, name="billing_checkout"),
    path("org/billing/portal/", billing_views.billing_portal, name="billing_portal"),
    path("org/billing/return/", billing_views.billing_return, name="billing_return"),
    path("billing/stripe/webhook/", billing_views.stripe_webhook, name="stripe_webhook"),
]
