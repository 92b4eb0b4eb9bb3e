"""Two-factor authentication pages: the status, setting up an authenticator app (TOTP, with
recovery codes), the code asked after the password, new recovery codes and turning it off.

The rule that sends people here (a confirmed device not yet verified in this session, or an
organization that requires two-factor) is ``tenants.middleware.two_factor``; the changes to
devices go through ``tenants.services`` and are audited in every organization of the person.
The method checks come first, so a wrong method is a 405 signed in or not.
"""

from __future__ import annotations

import base64
from typing import Any

import django_otp
import qrcode
import qrcode.image.svg
from allauth.account.adapter import get_adapter
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from . import services
from .forms import CodeForm
from .requests import SignedInRequest
from .views import safe_next


def _totp_qr_svg(device: TOTPDevice) -> str:
    """The otpauth:// URI as an inline SVG, rendered here (the secret never leaves the page)."""
    image = qrcode.make(device.config_url, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    return image.to_string(encoding="unicode")


def _manual_key(device: TOTPDevice) -> str:
    secret = base64.b32encode(device.bin_key).decode("ascii").rstrip("=")
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


def _confirmed_totp(user: Any) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


@require_GET
@login_required
def two_factor(request: SignedInRequest) -> HttpResponse:
    """Status: on (with recovery codes left) or off (a link to set it up)."""
    device = _confirmed_totp(request.user)
    remaining = StaticToken.objects.filter(device__user=request.user).count()
    return render(
        request, "tenants/two_factor.html", {"device": device, "recovery_remaining": remaining}
    )


@require_http_methods(["GET", "POST"])
@login_required
def two_factor_setup(request: SignedInRequest) -> HttpResponse:
    if _confirmed_totp(request.user) is not None:
        return redirect("two_factor")
    device = TOTPDevice.objects.filter(user=request.user, confirmed=False).first()
    if device is None:
        device = TOTPDevice.objects.create(
            user=request.user, name="Authenticator app", confirmed=False
        )
    form = CodeForm()
    if request.method == "POST":
        form = CodeForm(request.POST)
        if form.is_valid():
            refusal = _check_code(device, form.cleaned_data["code"])
            if refusal is None:
                codes = services.two_factor_enable(user=request.user, device=device)
                django_otp.login(request, device)
                messages.success(request, "Two-factor authentication is on.")
                return render(
                    request,
                    "tenants/recovery_codes.html",
                    {"codes": codes, "next": safe_next(request)},
                )
            form.add_error("code", refusal)
    return render(
        request,
        "tenants/two_factor_setup.html",
        {
            "form": form,
            "qr_svg": _totp_qr_svg(device),
            "manual_key": _manual_key(device),
            "next": safe_next(request, ""),
        },
    )


def _check_code(device: Any, code: str) -> str | None:
    """None if ``device`` accepts ``code``, else why not. A device locked by earlier failures
    (django-otp's throttling: 2^(n-1) seconds after the n-th) is not even asked."""
    allowed, details = device.verify_is_allowed()
    if not allowed:
        locked_until = (details or {}).get("locked_until")
        wait = (
            max(1, int((locked_until - timezone.now()).total_seconds()) + 1) if locked_until else 1
        )
        return f"Too many wrong codes. Wait {wait} seconds before trying again."
    if device.verify_token(code):
        return None
    return "That code is not right. Check your authenticator app's clock and try again."


def _verify_code(user: Any, code: str) -> tuple[Any, str]:
    """The device that accepts ``code`` (a 6-digit TOTP code, or a recovery code), or None and
    why not."""
    if code.isdigit():
        devices = list(TOTPDevice.objects.filter(user=user, confirmed=True))
    else:
        devices = list(StaticDevice.objects.filter(user=user, confirmed=True))
    refusal = "That is not a code from your authenticator app or a recovery code."
    for device in devices:
        refusal = _check_code(device, code) or ""
        if not refusal:
            return device, ""
    return None, refusal


def _second_factor_failed(request: SignedInRequest) -> None:
    services.sign_in_failure_record(
        user=request.user,
        stage=services.SignInStage.SECOND_FACTOR,
        ip=get_adapter(request).get_client_ip(request),
    )


@require_http_methods(["GET", "POST"])
@login_required
def two_factor_verify(request: SignedInRequest) -> HttpResponse:
    """The step after the password: a code from the authenticator app, or a recovery code."""
    next_url = safe_next(request)
    user: Any = request.user  # as OTPMiddleware wraps it, with is_verified()
    if user.is_verified():
        return HttpResponseRedirect(next_url)
    if (
        _confirmed_totp(request.user) is None
        and not StaticDevice.objects.filter(user=request.user).exists()
    ):
        return redirect("two_factor_setup")
    form = CodeForm()
    if request.method == "POST":
        form = CodeForm(request.POST)
        if form.is_valid():
            device, refusal = _verify_code(request.user, form.cleaned_data["code"])
            if device is not None:
                django_otp.login(request, device)
                if isinstance(device, StaticDevice):
                    left = StaticToken.objects.filter(device=device).count()
                    messages.warning(
                        request,
                        f"You used a recovery code; {left} left. "
                        "Generate new ones on the two-factor page if you are running low.",
                    )
                return HttpResponseRedirect(next_url)
            _second_factor_failed(request)
            form.add_error("code", refusal)
    return render(request, "tenants/two_factor_verify.html", {"form": form, "next": next_url})


@require_POST
@login_required
def two_factor_recovery_codes(request: SignedInRequest) -> HttpResponse:
    if _confirmed_totp(request.user) is None:
        return redirect("two_factor_setup")
    codes = services.two_factor_recovery_codes_regenerate(user=request.user)
    return render(request, "tenants/recovery_codes.html", {"codes": codes, "next": "/"})


@require_POST
@login_required
def two_factor_disable(request: SignedInRequest) -> HttpResponse:
    """Turn two-factor off; needs a current code, like any change that weakens the account."""
    form = CodeForm(request.POST)
    device, refusal = (None, "Enter a code.")
    if form.is_valid():
        device, refusal = _verify_code(request.user, form.cleaned_data["code"])
    if device is None:
        _second_factor_failed(request)
        messages.error(request, refusal)
        return redirect("two_factor")
    services.two_factor_disable(user=request.user)
    messages.success(request, "Two-factor authentication is off.")
    return redirect("two_factor")
