"""Contact points (where a person is reached, verified before use, in their order) and the
notification preferences that choose among them (quiet hours, every point for some priorities).
"""

from __future__ import annotations

import hmac
import re
import secrets
from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.crypto import salted_hmac

from audit.services import SYSTEM_ACTOR, audit_record
from escalations.models import CHANNEL_CHOICES, Escalation
from tenants.billing import channel_refusal
from tenants.models import Membership

from .models import ContactPoint, NotificationPreference
from .transports import TRANSPORTS, TransportError

# Quiet hours keep these channels; everything else waits for an urgent escalation.
QUIET_CHANNELS = frozenset({"email"})

VERIFICATION_TTL = timedelta(minutes=15)
VERIFICATION_MAX_ATTEMPTS = 5
VERIFICATION_RESEND_AFTER = timedelta(seconds=60)
_VERIFICATION_SALT = "awaithuman.notifications.verification"


class ContactPointError(ValueError):
    """A contact point change that cannot be made; the message is shown to the person."""


# --- Who is reached, where ---------------------------------------------------------------------


def preference_get(membership: Membership) -> NotificationPreference:
    """The person's notification preferences, created on first use.

    Creating them also makes the account's e-mail address the person's first contact point,
    verified — they signed in with it — so everyone is reachable from day one. It happens once:
    a person who removes every contact point afterwards is not notified (the console says so).
    """
    preference = NotificationPreference.objects.filter(membership=membership).first()
    if preference is not None:
        return preference
    with transaction.atomic():
        preference, created = NotificationPreference.objects.get_or_create(membership=membership)
        email = (membership.user.email or "").strip().lower()
        if created and email:
            point, added = ContactPoint.objects.get_or_create(
                membership=membership,
                channel="email",
                address=email,
                defaults={
                    "verified_at": timezone.now(),
                    "config": {"source": "account"},
                    "position": _next_position(membership),
                },
            )
            if added:
                audit_record(
                    organization_id=membership.organization_id,
                    action="contact_point.added",
                    actor=SYSTEM_ACTOR,
                    target=point.public_id,
                    data={"member": membership.public_id, "channel": "email", "source": "account"},
                )
    return preference


def contact_points_usable(
    membership: Membership,
    *,
    channels: list[str],
    priority: str,
    now: datetime,
    preference: NotificationPreference | None = None,
) -> list[ContactPoint]:
    """The person's contact points, in their order, that may carry this notification.

    A point must be verified and not failing, on a channel the level allows (none listed: all)
    with a transport, serve the escalation's priority, and — in the person's quiet hours,
    unless the escalation is urgent — be e-mail.
    """
    return contact_points_usable_among(
        list(membership.contact_points.order_by("position", "id")),
        channels=channels,
        priority=priority,
        now=now,
        preference=preference or preference_get(membership),
    )


def contact_points_usable_among(
    points: list[ContactPoint],
    *,
    channels: list[str],
    priority: str,
    now: datetime,
    preference: NotificationPreference,
) -> list[ContactPoint]:
    quiet = priority != Escalation.Priority.URGENT and preference.is_quiet(now)
    return [
        point
        for point in points
        if point.is_usable
        and point.channel in TRANSPORTS
        and (not channels or point.channel in channels)
        and point.serves(priority)
        and (not quiet or point.channel in QUIET_CHANNELS)
    ]


# --- Changing them ------------------------------------------------------------------------------


def _next_position(membership: Membership) -> int:
    highest = membership.contact_points.aggregate(highest=Max("position"))["highest"]
    return (highest or 0) + 1


def _point_audit(point: ContactPoint, action: str, actor: dict[str, Any], **data: Any) -> None:
    audit_record(
        organization_id=point.membership.organization_id,
        action=action,
        actor=actor,
        target=point.public_id,
        data={"member": point.membership.public_id, "channel": point.channel, **data},
    )


def channels_available() -> list[str]:
    """The channels this server can send on: a transport whose provider settings are set."""
    return [channel for channel, transport in TRANSPORTS.items() if transport.configured()]


def _channel_label(channel: str) -> str:
    return str(dict(CHANNEL_CHOICES).get(channel, channel))


# E.164: "+", a country code that does not start with 0, at most 15 digits in all.
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_PHONE_SEPARATORS = re.compile(r"[\s().\-]")
# A Slack member id (profile → ⋯ → Copy member ID): U… or, on Enterprise Grid, W….
_SLACK_MEMBER = re.compile(r"[UW][A-Z0-9]{4,20}")


def _address_normalise(channel: str, address: str) -> str:
    """The address as the provider will report it back (inbound answers are matched on it)."""
    address = address.strip()
    if channel == "email":
        try:
            validate_email(address)
        except ValidationError as exc:
            raise ContactPointError("Enter a valid e-mail address.") from exc
        return address.lower()
    if channel in ("sms", "whatsapp"):
        number = _PHONE_SEPARATORS.sub("", address.removeprefix("whatsapp:"))
        if number.startswith("00"):
            number = "+" + number[2:]
        if not _E164.fullmatch(number):
            raise ContactPointError(
                "Enter the number in international format with its country code, like +14155550123."
            )
        return number
    if channel == "slack":
        if not _SLACK_MEMBER.fullmatch(address):
            raise ContactPointError(
                "Enter your Slack member ID, like U012AB3CD (in Slack: your profile → ⋯ → "
                "Copy member ID)."
            )
        return address
    if not address or len(address) > 320:
        raise ContactPointError("Enter an address.")
    return address


def _contact_point_create(
    *,
    membership: Membership,
    channel: str,
    address: str,
    priorities: list[str] | None,
    config: dict[str, Any] | None = None,
) -> ContactPoint:
    preference_get(membership)  # the account e-mail is seeded first, so it stays first
    if channel not in TRANSPORTS:
        raise ContactPointError("That channel does not exist.")
    if channel not in channels_available():
        raise ContactPointError(
            f"{_channel_label(channel)} is not set up on this server; an administrator can "
            "turn it on (docs/channels.md)."
        )
    priorities = [p for p in (priorities or []) if p in Escalation.Priority.values]
    with transaction.atomic():
        if membership.contact_points.filter(channel=channel, address=address).exists():
            raise ContactPointError("You already have that contact point.")
        point = ContactPoint.objects.create(
            membership=membership,
            channel=channel,
            address=address,
            priorities=priorities,
            config=config or {},
            position=_next_position(membership),
        )
        _point_audit(point, "contact_point.added", membership.as_actor(), priorities=priorities)
    return point


def contact_point_add(
    *, membership: Membership, channel: str, address: str, priorities: list[str] | None = None
) -> ContactPoint:
    """Add an unverified contact point at the end of the person's list."""
    if channel == "push":
        raise ContactPointError(
            "Web Push is added from the browser that should receive it: use “Notify this browser”."
        )
    if refusal := channel_refusal(membership.organization, [channel]):
        raise ContactPointError(refusal)
    return _contact_point_create(
        membership=membership,
        channel=channel,
        address=_address_normalise(channel, address),
        priorities=priorities,
    )


def contact_point_add_push(
    *, membership: Membership, subscription: Any, label: str = ""
) -> ContactPoint:
    """Add this browser's Web Push subscription (``PushSubscription.toJSON()``), unverified:
    the code arrives as a push, which proves the subscription works end to end."""
    if not isinstance(subscription, dict):
        raise ContactPointError("subscription: expected the browser's PushSubscription JSON.")
    endpoint, keys = subscription.get("endpoint"), subscription.get("keys")
    endpoint = endpoint if isinstance(endpoint, str) else ""  # "" fails the URL check below
    parts = urlsplit(endpoint)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ContactPointError("subscription.endpoint: expected the push service's URL.")
    if len(endpoint) > 2000:
        raise ContactPointError("subscription.endpoint: longer than 2,000 characters.")
    if not isinstance(keys, dict) or not all(
        isinstance(keys.get(name), str) and 0 < len(keys[name]) <= 200
        for name in ("p256dh", "auth")
    ):
        raise ContactPointError("subscription.keys: expected p256dh and auth.")
    label = " ".join(str(label or "").split())[:60] or "Browser"
    fingerprint = salted_hmac(_VERIFICATION_SALT, endpoint).hexdigest()[:6]
    return _contact_point_create(
        membership=membership,
        channel="push",
        address=f"{label} · {parts.hostname} · {fingerprint}",
        priorities=None,
        config={"endpoint": endpoint, "keys": {"p256dh": keys["p256dh"], "auth": keys["auth"]}},
    )


def contact_point_remove(*, contact_point: ContactPoint, membership: Membership) -> None:
    with transaction.atomic():
        _point_audit(contact_point, "contact_point.removed", membership.as_actor())
        contact_point.delete()


def contact_point_move(*, contact_point: ContactPoint, membership: Membership, up: bool) -> None:
    """Swap with the neighbour above (``up``) or below; positions are renumbered 1, 2, 3…"""
    with transaction.atomic():
        points = list(
            ContactPoint.objects.select_for_update()
            .filter(membership=membership)
            .order_by("position", "id")
        )
        index = next(i for i, point in enumerate(points) if point.pk == contact_point.pk)
        other = index - 1 if up else index + 1
        if not 0 <= other < len(points):
            return
        points[index], points[other] = points[other], points[index]
        for position, point in enumerate(points, start=1):
            if point.position != position:
                point.position = position
                point.save(update_fields=["position"])
        _point_audit(
            contact_point,
            "contact_point.reordered",
            membership.as_actor(),
            order=[point.public_id for point in points],
        )


def contact_point_set_priorities(
    *, contact_point: ContactPoint, membership: Membership, priorities: list[str]
) -> None:
    priorities = [p for p in Escalation.Priority.values if p in priorities]
    with transaction.atomic():
        contact_point.priorities = priorities
        contact_point.save(update_fields=["priorities"])
        _point_audit(
            contact_point, "contact_point.updated", membership.as_actor(), priorities=priorities
        )


def _code_digest(point: ContactPoint, code: str) -> str:
    return salted_hmac(_VERIFICATION_SALT, f"{point.public_id}:{code}").hexdigest()


def contact_point_verification_begin(
    *, contact_point: ContactPoint, now: datetime | None = None
) -> str | None:
    """Send a verification code (or start the channel's own round trip).

    Returns the instructions a round-trip channel wants shown, or None when a code was sent.
    Resends are throttled to one a minute.
    """
    now = now or timezone.now()
    if contact_point.verified_at is not None:
        raise ContactPointError("This contact point is already verified.")
    transport = TRANSPORTS[contact_point.channel]()
    try:
        instructions = transport.begin_verification(contact_point)
    except TransportError as exc:
        raise ContactPointError(f"Verification could not start: {exc.message}") from exc
    if instructions is not None:
        return instructions
    sent = contact_point.verification_sent_at
    if sent is not None and now - sent < VERIFICATION_RESEND_AFTER:
        raise ContactPointError("A code was just sent; wait a minute before asking again.")
    code = f"{secrets.randbelow(10**6):06d}"
    with transaction.atomic():
        contact_point.verification_digest = _code_digest(contact_point, code)
        contact_point.verification_expires_at = now + VERIFICATION_TTL
        contact_point.verification_attempts = 0
        contact_point.verification_sent_at = now
        contact_point.save(
            update_fields=[
                "verification_digest",
                "verification_expires_at",
                "verification_attempts",
                "verification_sent_at",
            ]
        )
        _point_audit(contact_point, "contact_point.verification_sent", SYSTEM_ACTOR)
    try:
        transport.send_verification(contact_point, code)
    except TransportError as exc:
        raise ContactPointError(f"The code could not be sent: {exc.message}") from exc
    return None


def contact_point_verify(*, contact_point: ContactPoint, membership: Membership, code: str) -> None:
    """Check a typed code; five wrong guesses burn it (ask for a new one)."""
    now = timezone.now()
    code = "".join(code.split())
    with transaction.atomic():
        point = ContactPoint.objects.select_for_update().get(pk=contact_point.pk)
        if point.verified_at is not None:
            return
        if not point.verification_digest or (
            point.verification_expires_at is not None and point.verification_expires_at < now
        ):
            raise ContactPointError("That code has expired; send a new one.")
        if point.verification_attempts >= VERIFICATION_MAX_ATTEMPTS:
            raise ContactPointError("Too many wrong codes; send a new one.")
        if not hmac.compare_digest(point.verification_digest, _code_digest(point, code)):
            point.verification_attempts += 1
            point.save(update_fields=["verification_attempts"])
            left = VERIFICATION_MAX_ATTEMPTS - point.verification_attempts
            # Raised after the block, so the wrong guess is committed rather than rolled back
            # with the error: otherwise the counter would be no throttle at all.
            error = ContactPointError(
                f"That code is not right ({left} tries left)."
                if left
                else "Too many wrong codes; send a new one."
            )
        else:
            error = None
            contact_point_mark_verified(contact_point=point, actor=membership.as_actor())
    if error is not None:
        raise error
    contact_point.verified_at = point.verified_at


def contact_point_mark_verified(*, contact_point: ContactPoint, actor: dict[str, Any]) -> None:
    """The address is proven (a code typed, or a channel's round trip completed)."""
    with transaction.atomic():
        contact_point.verified_at = timezone.now()
        contact_point.verification_digest = ""
        contact_point.verification_expires_at = None
        contact_point.verification_attempts = 0
        contact_point.failing_since = None
        contact_point.last_error = ""
        contact_point.save(
            update_fields=[
                "verified_at",
                "verification_digest",
                "verification_expires_at",
                "verification_attempts",
                "failing_since",
                "last_error",
            ]
        )
        _point_audit(contact_point, "contact_point.verified", actor)


def contact_point_send_test(*, contact_point: ContactPoint, membership: Membership) -> str:
    """Send a test now (the person is watching); a success clears a failing mark."""
    if contact_point.verified_at is None:
        raise ContactPointError("Verify this contact point first.")
    transport = TRANSPORTS[contact_point.channel]()
    try:
        provider_id = transport.send_test(contact_point)
    except TransportError as exc:
        with transaction.atomic():
            contact_point.last_error = exc.message[:500]
            contact_point.save(update_fields=["last_error"])
            _point_audit(
                contact_point, "contact_point.test_failed", membership.as_actor(), error=exc.message
            )
        raise ContactPointError(f"The test failed: {exc.message}") from exc
    with transaction.atomic():
        contact_point.failing_since = None
        contact_point.last_error = ""
        contact_point.save(update_fields=["failing_since", "last_error"])
        _point_audit(contact_point, "contact_point.test_sent", membership.as_actor())
    return provider_id or ""


def preference_update(
    *,
    membership: Membership,
    quiet_start: time | None,
    quiet_end: time | None,
    time_zone: str,
) -> NotificationPreference:
    try:
        ZoneInfo(time_zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ContactPointError(f"Unknown time zone: {time_zone}") from exc
    if (quiet_start is None) != (quiet_end is None):
        raise ContactPointError("Quiet hours need both a start and an end.")
    preference = preference_get(membership)
    with transaction.atomic():
        preference.quiet_start, preference.quiet_end = quiet_start, quiet_end
        preference.time_zone = time_zone
        preference.save(update_fields=["quiet_start", "quiet_end", "time_zone"])
        audit_record(
            organization_id=membership.organization_id,
            action="notification_preference.updated",
            actor=membership.as_actor(),
            target=membership.public_id,
            data={
                "quiet_start": quiet_start.isoformat() if quiet_start else None,
                "quiet_end": quiet_end.isoformat() if quiet_end else None,
                "time_zone": time_zone,
            },
        )
    return preference


def preference_set_all_points_for(
    *, membership: Membership, priorities: list[str]
) -> NotificationPreference:
    """The priorities that reach the person on every usable contact point at once."""
    priorities = [p for p in Escalation.Priority.values if p in priorities]
    preference = preference_get(membership)
    with transaction.atomic():
        preference.all_points_for = priorities
        preference.save(update_fields=["all_points_for"])
        audit_record(
            organization_id=membership.organization_id,
            action="notification_preference.updated",
            actor=membership.as_actor(),
            target=membership.public_id,
            data={"all_points_for": priorities},
        )
    return preference
