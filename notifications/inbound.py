"""Inbound channel webhooks: answers by SMS, WhatsApp, Telegram, Slack and Web Push, and
Twilio's status callbacks for the messages we sent.

Each request is authenticated the provider's way before anything is read from it — Twilio's
``X-Twilio-Signature`` (HMAC-SHA1 over our public URL and the form), Telegram's secret-token
header, Slack's v0 signature with a 5-minute window, and for push the HMAC'd token in the
encrypted payload — and then the sender must be the person the answer code belongs to (their
verified contact point on that channel). The answer itself goes through ``response_submit``
(``notifications.answer_codes``); refusals — a late answer, a viewer, a claim held by someone
else — are told back politely in the same channel. A provider that is not configured gets 404.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any
from xml.sax.saxutils import escape

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from twilio.request_validator import RequestValidator

from escalations.models import Response

from .answer_codes import (
    answer_code_by_push_token,
    answer_code_by_sms,
    answer_code_by_token,
    answer_from_channel,
    parse_sms_answer,
)
from .contact_points import contact_point_mark_verified
from .deliveries import delivery_report_delivered, delivery_report_failed
from .models import ContactPoint
from .transports.base import TransportError
from .transports.twilio import status_error

logger = logging.getLogger(__name__)

SLACK_TOLERANCE_SECONDS = 5 * 60
TWILIO_CHANNELS = ("sms", "whatsapp")
_OUTCOMES = {"approve": Response.Outcome.APPROVE, "reject": Response.Outcome.REJECT}


def _not_found() -> HttpResponse:
    return HttpResponse(status=404)


def _verified_point(*, channel: str, address: str, membership_id: int) -> bool:
    return ContactPoint.objects.filter(
        channel=channel,
        address=address,
        membership_id=membership_id,
        verified_at__isnull=False,
    ).exists()


# --- Twilio: SMS and WhatsApp -------------------------------------------------------------


def _twiml(text: str | None) -> HttpResponse:
    message = f"<Message>{escape(text)}</Message>" if text else ""
    return HttpResponse(
        f'<?xml version="1.0" encoding="UTF-8"?><Response>{message}</Response>',
        content_type="text/xml",
    )


def _twilio_refusal(request: HttpRequest) -> HttpResponse | None:
    """404 while Twilio is not configured, 403 unless ``X-Twilio-Signature`` is Twilio's
    signature of this very request; None for a request Twilio made."""
    if not settings.TWILIO_AUTH_TOKEN:
        return _not_found()
    # Twilio signs the URL it called; behind a proxy that is our public address, not the
    # Host header this process sees.
    url = settings.AWAITHUMAN_BASE_URL + request.get_full_path()
    signature = request.headers.get("X-Twilio-Signature", "")
    validator = RequestValidator(settings.TWILIO_AUTH_TOKEN)
    if not signature or not validator.validate(url, request.POST, signature):
        return HttpResponse("Invalid signature.", status=403, content_type="text/plain")
    return None


def _twilio_answer(request: HttpRequest, channel: str) -> HttpResponse:
    if refusal := _twilio_refusal(request):
        return refusal

    sender = request.POST.get("From", "").removeprefix("whatsapp:")
    points = list(
        ContactPoint.objects.select_related("membership").filter(
            channel=channel, address=sender, verified_at__isnull=False
        )
    )
    if not points:
        # Stay silent to numbers we do not know: replying would let anyone make us text.
        return _twiml(None)
    # A WhatsApp quick-reply button sends its id as ButtonPayload ("YES 4821").
    text = request.POST.get("ButtonPayload") or request.POST.get("Body", "")
    parsed = parse_sms_answer(text)
    if parsed is None:
        return _twiml("To answer, reply YES <code> to approve or NO <code> <reason> to reject.")
    answer_code = answer_code_by_sms(
        memberships=[point.membership for point in points], code=parsed.code
    )
    if answer_code is None:
        return _twiml(f"No escalation with code {parsed.code} is waiting for you.")
    _accepted, reply = answer_from_channel(
        answer_code=answer_code,
        membership=answer_code.membership,
        outcome=parsed.outcome,
        comment=parsed.comment,
        channel=channel,
    )
    return _twiml(reply)


@csrf_exempt
@require_POST
def twilio_sms(request: HttpRequest) -> HttpResponse:
    return _twilio_answer(request, "sms")


@csrf_exempt
@require_POST
def twilio_whatsapp(request: HttpRequest) -> HttpResponse:
    return _twilio_answer(request, "whatsapp")


@csrf_exempt
@require_POST
def twilio_status(request: HttpRequest) -> HttpResponse:
    """Twilio's status callback for a message we sent (every message names it).

    ``failed`` / ``undelivered`` fail the delivery and fall through to the person's next contact
    point; ``delivered`` / ``read`` record that it arrived; other statuses (``queued``, ``sent``,
    …) change nothing. Once the signature holds the answer is always 204: a repeated callback
    changes nothing, and a MessageSid that is no delivery's (a verification code, a test
    message) is acknowledged too, or Twilio would keep retrying it.
    """
    if refusal := _twilio_refusal(request):
        return refusal
    # The delivery is found by the sid Twilio answered the send with, which ``deliveries_send``
    # stores once the event's few sends are done. A report overtaking the store (it would have
    # to come within milliseconds of the send) finds nothing and is dropped like an unknown sid.
    sid = request.POST.get("MessageSid", "")
    status = request.POST.get("MessageStatus", "")
    if sid and status in ("failed", "undelivered"):
        delivery_report_failed(
            channels=TWILIO_CHANNELS,
            provider_id=sid,
            error=status_error(status, request.POST.get("ErrorCode", "")),
        )
    elif sid and status in ("delivered", "read"):
        delivery_report_delivered(channels=TWILIO_CHANNELS, provider_id=sid, status=status)
    return HttpResponse(status=204)


# --- Telegram -------------------------------------------------------------------------------


@csrf_exempt
@require_POST
def telegram(request: HttpRequest) -> HttpResponse:
    """Telegram's webhook (setWebhook with ``secret_token``). Replies ride on the webhook's
    answer as a Bot API method call, so an answer costs no extra request to Telegram."""
    secret = settings.TELEGRAM_WEBHOOK_SECRET
    if not (secret and settings.TELEGRAM_BOT_TOKEN):
        return _not_found()
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        return HttpResponse("Invalid secret token.", status=403, content_type="text/plain")
    try:
        update = json.loads(request.body)
    except ValueError:
        return HttpResponse("Body must be JSON.", status=400, content_type="text/plain")
    if not isinstance(update, dict):
        return HttpResponse("Body must be a JSON object.", status=400, content_type="text/plain")
    if isinstance(update.get("callback_query"), dict):
        return _telegram_callback(update["callback_query"])
    if isinstance(update.get("message"), dict):
        return _telegram_message(update["message"])
    # Any other update type: acknowledged, so Telegram does not redeliver it.
    return HttpResponse(status=200)


def _telegram_callback(query: dict[str, Any]) -> HttpResponse:
    def reply(text: str, *, alert: bool) -> JsonResponse:
        return JsonResponse(
            {
                "method": "answerCallbackQuery",
                "callback_query_id": str(query.get("id", "")),
                "text": text[:200],
                "show_alert": alert,
            }
        )

    prefix, _, rest = str(query.get("data", "")).partition(":")
    action, _, token = rest.partition(":")
    answer_code = answer_code_by_token(token) if prefix == "ah" else None
    if answer_code is None or action not in _OUTCOMES:
        return reply("This button is no longer valid.", alert=True)
    sender = str((query.get("from") or {}).get("id", ""))
    if not _verified_point(
        channel="telegram", address=sender, membership_id=answer_code.membership_id
    ):
        return reply("This Telegram account is not linked to the person asked.", alert=True)
    accepted, text = answer_from_channel(
        answer_code=answer_code,
        membership=answer_code.membership,
        outcome=_OUTCOMES[action],
        channel="telegram",
    )
    return reply(text, alert=not accepted)


def _telegram_message(message: dict[str, Any]) -> HttpResponse:
    """ "/start <code>" from the bot's deep link links this chat to a contact point."""
    from .transports.telegram import link_digest

    text = str(message.get("text", ""))
    chat = message.get("chat") or {}
    chat_id = str(chat.get("id", ""))
    command, _, code = text.partition(" ")
    if command.split("@", 1)[0] != "/start" or not chat_id:
        return HttpResponse(status=200)
    if chat.get("type") != "private":
        return _telegram_send(chat_id, "Link AwaitHuman from a private chat with this bot.")
    code = code.strip()
    point = (
        ContactPoint.objects.select_related("membership__user")
        .filter(
            channel="telegram",
            verified_at__isnull=True,
            verification_digest=link_digest(code),
            verification_expires_at__gt=timezone.now(),
        )
        .first()
        if code
        else None
    )
    if point is None:
        return _telegram_send(
            chat_id, "This link has expired or was used already; start again from the console."
        )
    if point.membership.contact_points.filter(channel="telegram", address=chat_id).exists():
        return _telegram_send(chat_id, "This chat is already linked to your account.")
    contact_point_link(point, address=chat_id)
    return _telegram_send(chat_id, "Linked: escalations for you will arrive in this chat.")


def _telegram_send(chat_id: str, text: str) -> JsonResponse:
    return JsonResponse({"method": "sendMessage", "chat_id": chat_id, "text": text})


def contact_point_link(point: ContactPoint, *, address: str) -> None:
    """Record the proven address and verify the contact point (the notification core's
    ``contact_point_mark_verified`` audits it)."""
    with transaction.atomic():
        point.address = address
        point.save(update_fields=["address"])
        contact_point_mark_verified(contact_point=point, actor=point.membership.as_actor())


# --- Slack ----------------------------------------------------------------------------------


def slack_signature_valid(*, secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Slack's v0 scheme: HMAC-SHA256 of ``v0:<timestamp>:<raw body>``, timestamp within
    5 minutes (a replayed request is refused). https://api.slack.com/authentication/verifying-requests-from-slack
    """
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - sent_at) > SLACK_TOLERANCE_SECONDS:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode())


@csrf_exempt
@require_POST
def slack_interactivity(request: HttpRequest) -> HttpResponse:
    from .transports.slack import post_ephemeral

    if not (settings.SLACK_SIGNING_SECRET and settings.SLACK_BOT_TOKEN):
        return _not_found()
    if not slack_signature_valid(
        secret=settings.SLACK_SIGNING_SECRET,
        timestamp=request.headers.get("X-Slack-Request-Timestamp", ""),
        body=request.body,
        signature=request.headers.get("X-Slack-Signature", ""),
    ):
        return HttpResponse("Invalid signature.", status=403, content_type="text/plain")
    try:
        payload = json.loads(request.POST.get("payload", ""))
    except ValueError:
        return HttpResponse("payload must be JSON.", status=400, content_type="text/plain")
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return HttpResponse(status=200)
    actions = payload.get("actions") or [{}]
    action, _, token = str(actions[0].get("value", "")).partition(":")
    if action not in _OUTCOMES:
        return HttpResponse(status=200)  # "Open in console" and other buttons
    user = str((payload.get("user") or {}).get("id", ""))
    channel = str(
        (payload.get("channel") or {}).get("id")
        or (payload.get("container") or {}).get("channel_id", "")
    )
    answer_code = answer_code_by_token(token)
    if answer_code is None:
        text = "This button is no longer valid."
    elif not _verified_point(
        channel="slack", address=user, membership_id=answer_code.membership_id
    ):
        text = "This Slack account is not linked to the person asked."
    else:
        accepted, text = answer_from_channel(
            answer_code=answer_code,
            membership=answer_code.membership,
            outcome=_OUTCOMES[action],
            channel="slack",
        )
        if accepted and answer_code.escalation.is_terminal:
            # The message itself is edited to show the outcome (update_after_decision).
            return HttpResponse(status=200)
    try:
        post_ephemeral(channel=channel, user=user, text=text)
    except TransportError:
        logger.warning("slack ephemeral reply failed channel=%s", channel, exc_info=True)
    return HttpResponse(status=200)


# --- Web Push -------------------------------------------------------------------------------


@csrf_exempt
@require_POST
def push_answer(request: HttpRequest) -> JsonResponse:
    """The service worker's Approve/Reject action: ``{"token": …, "action": "approve"}``."""
    try:
        body = json.loads(request.body)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return JsonResponse({"detail": "The body must be a JSON object."}, status=400)
    action = body.get("action")
    if action not in _OUTCOMES:
        return JsonResponse({"detail": "action must be approve or reject."}, status=400)
    token = body.get("token")
    answer_code = answer_code_by_push_token(token) if isinstance(token, str) else None
    if answer_code is None:
        return JsonResponse({"detail": "This notification is no longer valid."}, status=404)
    comment = body.get("comment")
    accepted, text = answer_from_channel(
        answer_code=answer_code,
        membership=answer_code.membership,
        outcome=_OUTCOMES[action],
        comment=comment[:2000] if isinstance(comment, str) else "",
        channel="push",
    )
    return JsonResponse({"accepted": accepted, "detail": text}, status=200 if accepted else 409)
