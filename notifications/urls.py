"""Inbound channel webhooks (providers calling us), under /hooks/ (``awaithuman/urls.py``)."""

from __future__ import annotations

from django.urls import path

from . import inbound

app_name = "hooks"

urlpatterns = [
    path("twilio/sms", inbound.twilio_sms, name="twilio-sms"),
    path("twilio/whatsapp", inbound.twilio_whatsapp, name="twilio-whatsapp"),
    path("twilio/status", inbound.twilio_status, name="twilio-status"),
    path("telegram", inbound.telegram, name="telegram"),
    path("slack/interactivity", inbound.slack_interactivity, name="slack-interactivity"),
    path("push/answer", inbound.push_answer, name="push-answer"),
]
