"""The second factor, enforced for every signed-in request (after ``OTPMiddleware`` and
``CurrentOrganizationMiddleware``).

* Someone with a confirmed device who has only given a password is sent to
  ``/account/2fa/verify/`` until ``request.user.is_verified()``.
* In an organization with ``require_2fa``, someone without a device is sent to
  ``/account/2fa/setup/`` before any page of it.
* Django admin always needs a verified second factor (``AwaitHumanAdminSite.has_permission``
  refuses without one; here the person is sent to set one up or to enter a code).

The API (API keys, not sessions) and the pages needed to get through these steps are exempt.
``session_second_factor_pending`` is the same rule for callers outside the request cycle (the
queue's websocket consumer).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django_otp import DEVICE_ID_SESSION_KEY, user_has_device
from django_otp.models import Device

from tenants.models import Organization

# Paths anyone signed in may reach before the second factor (the way through, and sign-out).
_ALWAYS_OPEN = (
    "/account/logout/",
    "/account/2fa/verify/",
    "/account/confirm-email/",
    "/static/",
    "/api/",
    "/healthz",
    "/readyz",
    "/.well-known/",
)
# Additionally open to someone who must still set a device up.
_OPEN_FOR_SETUP = ("/account/2fa/setup/", "/org/switch/")

VERIFY = "verify"
SETUP = "setup"


def second_factor_pending(user: Any, organization: Organization | None) -> str | None:
    """What this signed-in ``user`` (as wrapped by ``OTPMiddleware``) still owes: ``"verify"``
    (a code), ``"setup"`` (a device, required by ``organization``) or None."""
    if not user.is_authenticated:
        return None
    return _pending(user, organization, verified=user.is_verified())


def session_second_factor_pending(
    user: Any, session: Any, organization: Organization | None
) -> str | None:
    """The same rule for code that has the session but runs outside ``OTPMiddleware`` (the
    queue's websocket consumer): verified means the session names a confirmed device of this
    user, as ``django_otp.login`` left it. Synchronous (database)."""
    if not user.is_authenticated:
        return None
    persistent_id = session.get(DEVICE_ID_SESSION_KEY)
    device = Device.from_persistent_id(persistent_id) if persistent_id else None
    verified = device is not None and device.user_id == user.pk and device.confirmed
    return _pending(user, organization, verified=verified)


def _pending(user: Any, organization: Organization | None, *, verified: bool) -> str | None:
    if verified:
        return None
    if user_has_device(user, confirmed=True):
        return VERIFY
    if organization is not None and organization.require_2fa:
        return SETUP
    return None


class TwoFactorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        redirect = self._redirect(request)
        return redirect if redirect is not None else self.get_response(request)

    def _redirect(self, request: HttpRequest) -> HttpResponse | None:
        user: Any = request.user  # as OTPMiddleware wraps it, with is_verified()
        path = request.path
        if not user.is_authenticated or path.startswith(_ALWAYS_OPEN):
            return None
        organization: Organization | None = getattr(request, "organization", None)
        pending = second_factor_pending(user, organization)
        admin = path.startswith("/admin/")
        if pending is None and admin and not user.is_verified():
            pending = SETUP
        if pending is None:
            return None
        if pending == SETUP and path.startswith(_OPEN_FOR_SETUP):
            return None
        if pending == SETUP:
            # Outside the admin, a device is only ever asked for by the organization's rule.
            messages.info(
                request,
                "Django admin needs two-factor authentication: set it up to continue."
                if admin or organization is None
                else f"{organization.name} requires two-factor authentication: "
                "set it up to continue.",
            )
        target = reverse("two_factor_verify" if pending == VERIFY else "two_factor_setup")
        if request.method == "GET":
            target += "?" + urlencode({"next": request.get_full_path()})
        return HttpResponseRedirect(target)
