"""Signing in as a persona in tests: with a password only, or past the second factor too."""

from __future__ import annotations

import time
from typing import Any

from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice


def signed_in(user: Any) -> Client:
    """A client signed in with the password step only (no second factor given)."""
    client = Client()
    client.force_login(user)
    return client


def verified(user: Any) -> Client:
    """A client signed in and verified with a TOTP device, as after the code step: the
    equivalent of ``django_otp.login(request, device)``."""
    client = signed_in(user)
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Test app", confirmed=True)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return client


def code_for(device: TOTPDevice, *, steps_ahead: int = 0) -> str:
    """The code an authenticator app shows now, or ``steps_ahead`` 30-second steps later (the
    device accepts one step either way; a code is never accepted twice)."""
    generator = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    generator.time = time.time() + steps_ahead * device.step
    return f"{generator.token():0{device.digits}d}"
