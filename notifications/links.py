"""Signed single-use action links ("Approve" / "Reject" in an e-mail).

The token is the credential: Django's ``TimestampSigner`` (HMAC under ``SECRET_KEY`` with its
own salt) over the delivery, escalation, member and outcome. Opening the link (GET) only shows
a confirmation page, because mail scanners and link previews fetch every URL in a message; the
page's button POSTs the token back, and only that POST answers. A link is single use — the
first POST marks its delivery (``Delivery.action_used_at``) — and dies with the escalation's
deadline (after it the escalation is terminal anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.core import signing
from django.urls import reverse

from escalations.models import Escalation, Response

from .messages import is_simple_approval

if TYPE_CHECKING:
    from .models import Delivery

SALT = "awaithuman.notifications.action-link"
OUTCOMES = (Response.Outcome.APPROVE, Response.Outcome.REJECT)


@dataclass(frozen=True)
class ActionClaim:
    """What a valid token says: who may answer what, through which delivery."""

    delivery: str
    escalation: str
    membership: str
    outcome: str


def answerable_by_link(escalation: Escalation) -> bool:
    """A plain approval can be answered with one click; a typed answer needs the console.
    The same rule as the chat buttons (``messages.is_simple_approval``)."""
    return is_simple_approval(escalation)


def action_token(delivery: Delivery, outcome: str) -> str:
    return signing.TimestampSigner(salt=SALT).sign_object(
        {
            "d": delivery.public_id,
            "e": delivery.escalation.public_id,
            "m": delivery.membership.public_id if delivery.membership else "",
            "o": outcome,
        },
        compress=True,
    )


def action_url(delivery: Delivery, outcome: str) -> str:
    path = reverse("notifications:action", args=[action_token(delivery, outcome)])
    return f"{settings.AWAITHUMAN_BASE_URL}{path}"


def action_claim(token: str) -> ActionClaim:
    """The claim in ``token``; ``signing.BadSignature`` if it was not made by us."""
    value = signing.TimestampSigner(salt=SALT).unsign_object(token)
    if not isinstance(value, dict) or value.get("o") not in OUTCOMES:
        raise signing.BadSignature("not an action token")
    return ActionClaim(
        delivery=str(value.get("d", "")),
        escalation=str(value.get("e", "")),
        membership=str(value.get("m", "")),
        outcome=str(value["o"]),
    )
