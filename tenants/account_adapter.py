"""django-allauth's hooks into our accounts: every refused password becomes an audit event."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from . import services


class AccountAdapter(DefaultAccountAdapter):
    def pre_authenticate(self, request: HttpRequest, **credentials: Any) -> None:
        try:
            super().pre_authenticate(request, **credentials)
        except ValidationError:
            self._record(request, credentials, services.SignInStage.FIRST_FACTOR_LOCKED)
            raise

    def authentication_failed(self, request: HttpRequest, **credentials: Any) -> None:
        self._record(request, credentials, services.SignInStage.FIRST_FACTOR)

    def _record(self, request: HttpRequest, credentials: dict[str, Any], stage: str) -> None:
        email = credentials.get("email") or ""
        user = get_user_model().objects.filter(email__iexact=email).first() if email else None
        services.sign_in_failure_record(user=user, stage=stage, ip=self.get_client_ip(request))
