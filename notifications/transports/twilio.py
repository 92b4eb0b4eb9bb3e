"""SMS and WhatsApp through Twilio's Messages API (plain HTTP; the ``twilio`` package is used
only to validate the signatures of inbound webhooks, in ``notifications.inbound``).

An SMS carries the person's short code: they answer "YES 4821" or "NO 4821 too risky". WhatsApp
sends the same text, or — with ``TWILIO_WHATSAPP_CONTENT_SID`` set — a ``twilio/quick-reply``
Content Template whose variables are ``{{1}}`` the summary, ``{{2}}`` the code and ``{{3}}`` the
console link; give its buttons the ids ``YES {{2}}`` and ``NO {{2}}`` and the reply's
``ButtonPayload`` answers exactly like a typed SMS.

Twilio has no idempotency key for Messages; the deliver task's conditional claim is what keeps a
retry from texting twice.

Twilio accepts a message (HTTP 201) before anyone has it. Every message names our
``/hooks/twilio/status`` as its ``StatusCallback``; Twilio reports there whether it was delivered
or dropped, and ``status_error`` turns a drop into the same ``TransportError`` a refused send
would be (``notifications.inbound.twilio_status``).
"""

from __future__ import annotations

import json

from django.conf import settings
from django.urls import reverse

from escalations.models import Escalation
from notifications.answer_codes import answer_code_for
from notifications.messages import is_simple_approval, summary_text
from notifications.models import ContactPoint, Delivery

from . import http
from .base import Transport, TransportError

# Twilio's error codes for the messages we send, from its error dictionary
# (https://www.twilio.com/docs/api/errors/<code>): code -> (its name, whether the address itself
# is unusable). An unusable address — an invalid, unknown or unsubscribed number, a landline, a
# number without WhatsApp, a region the account may not text — marks the contact point failing,
# whether Twilio refuses the message at once (HTTP 400) or reports it later in a status callback.
# The other failures lose that one message but say nothing about the next: a handset switched
# off or out of coverage (30003), a full carrier queue (30001), the carrier's "unknown error"
# (30008), content filtering (30007), WhatsApp's 24-hour window (63016). Either way the person's
# next contact point is tried at once.
ERRORS: dict[int, tuple[str, bool]] = {
    21211: ("Invalid 'To' phone number", True),
    21214: ("'To' phone number cannot be reached", True),
    21217: ("Phone number does not appear to be valid", True),
    21401: ("Invalid phone number", True),
    21407: ("This phone number type does not support SMS or MMS", True),
    21408: ("Permission to send an SMS has not been enabled for the region", True),
    21610: ("Attempt to send to an unsubscribed recipient", True),
    21612: ("The 'To' phone number is not reachable via SMS or MMS", True),
    21614: ("'To' number is not a valid mobile number", True),
    30001: ("Queue overflow", False),
    30002: ("Account suspended", False),
    30003: ("Unreachable destination handset", False),
    30004: ("Message blocked", True),  # mostly a recipient who opted out
    30005: ("Unknown destination handset", True),
    30006: ("Landline or unreachable carrier", True),
    30007: ("Message filtered", False),
    30008: ("Unknown error", False),
    63003: ("Channel could not find the 'To' address", True),  # not on WhatsApp
    63016: ("Outside the allowed window (WhatsApp's 24 hours)", False),
    63024: ("Invalid message recipient", True),
}
PERMANENT_CODES = frozenset(code for code, (_name, unusable) in ERRORS.items() if unusable)


def status_callback_url() -> str:
    """Where Twilio reports what became of a message; signed like every Twilio webhook."""
    return settings.AWAITHUMAN_BASE_URL + reverse("hooks:twilio-status")


def status_error(status: str, error_code: str) -> TransportError:
    """What a ``failed`` or ``undelivered`` status callback means: permanent when the code says
    the address is unusable (see ``ERRORS``)."""
    error_code = error_code.strip()
    code = int(error_code) if error_code.isdigit() else 0
    name, unusable = ERRORS.get(code, (f"message {status}", False))
    return TransportError(f"Twilio {error_code or '(no code)'}: {name}", permanent=unusable)


class SmsTransport(Transport):
    channel = "sms"
    settings_required = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM_NUMBER")

    def _address(self, number: str) -> str:
        return number

    def _sender(self) -> str:
        return settings.TWILIO_FROM_NUMBER

    def send(self, delivery: Delivery) -> str:
        escalation = delivery.escalation
        contact_point = delivery.contact_point
        assert contact_point is not None
        answer_code = answer_code_for(escalation=escalation, membership=contact_point.membership)
        return self._send_escalation(contact_point, escalation, answer_code.code)

    def _send_escalation(
        self, contact_point: ContactPoint, escalation: Escalation, code: str
    ) -> str:
        text = f"AwaitHuman: {summary_text(escalation)}\n"
        if is_simple_approval(escalation):
            text += f"Reply YES {code} to approve or NO {code} <reason> to reject.\n"
        else:
            text += "Answer in the console: "
        text += escalation.console_url
        return self._message(contact_point.address, body=text)

    def send_test(self, contact_point: ContactPoint) -> str:
        return self._message(
            contact_point.address,
            body="AwaitHuman test message: escalations will reach you here.",
        )

    def send_verification(self, contact_point: ContactPoint, code: str) -> None:
        self._message(
            contact_point.address,
            body=f"Your AwaitHuman verification code is {code}. It links this number to your "
            "account; ignore it if you did not ask for it.",
        )

    def update_after_decision(self, delivery: Delivery) -> None:
        """A text message cannot be edited; a late reply is told the outcome instead."""

    def _message(self, to: str, *, body: str, extra: dict[str, str] | None = None) -> str:
        sid, token = settings.TWILIO_ACCOUNT_SID, settings.TWILIO_AUTH_TOKEN
        if not (sid and token and self._sender()):
            raise TransportError(f"Twilio is not configured for {self.channel}.")
        data = {
            "To": self._address(to),
            "From": self._address(self._sender()),
            "StatusCallback": status_callback_url(),
        }
        if extra:
            data.update(extra)
        else:
            data["Body"] = body[:1600]
        response = http.post(
            f"{settings.TWILIO_API_BASE}/2010-04-01/Accounts/{sid}/Messages.json",
            data=data,
            auth=(sid, token),
        )
        body_json = http.json_body(response)
        if response.status_code in (200, 201):
            return str(body_json.get("sid", ""))
        code = body_json.get("code")
        message = f"Twilio {response.status_code} {code or ''}: {body_json.get('message', '')}"
        if error := http.transient(response, message):
            raise error
        # 401/403/404 mean our account settings are wrong, not the person's number.
        permanent = code in PERMANENT_CODES or response.status_code == 400
        raise TransportError(message.strip(), permanent=permanent)


class WhatsAppTransport(SmsTransport):
    channel = "whatsapp"
    settings_required = ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_WHATSAPP_FROM")

    def _address(self, number: str) -> str:
        return number if number.startswith("whatsapp:") else f"whatsapp:{number}"

    def _sender(self) -> str:
        return settings.TWILIO_WHATSAPP_FROM

    def _send_escalation(
        self, contact_point: ContactPoint, escalation: Escalation, code: str
    ) -> str:
        if settings.TWILIO_WHATSAPP_CONTENT_SID and is_simple_approval(escalation):
            variables = {
                "1": summary_text(escalation)[:900],
                "2": code,
                "3": escalation.console_url,
            }
            return self._message(
                contact_point.address,
                body="",
                extra={
                    "ContentSid": settings.TWILIO_WHATSAPP_CONTENT_SID,
                    "ContentVariables": json.dumps(variables),
                },
            )
        return super()._send_escalation(contact_point, escalation, code)
