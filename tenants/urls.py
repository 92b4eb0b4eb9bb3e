"""Machine-facing URLs of the tenants app: Stripe's webhook (the console pages are
``console_urls``)."""

from __future__ import annotations

from django.urls import path

from . import billing_views

urlpatterns = [
    path("billing/stripe/webhook/", billing_views.stripe_webhook, name="stripe_webhook"),
]
