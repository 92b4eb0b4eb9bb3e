"""django-allauth's hooks into our accounts: every refused password becomes an audit event, and
the failed-login lockout counts per account, whatever host name the attempts were sent to."""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from . import services


class AccountAdapter(DefaultAccountAdapter):
    def _get_login_attempts_cache_key(self, request: HttpRequest, **credentials: Any) -> str:
        # allauth keys the per-account limit by "<site domain>:<login>", and without
        # django.contrib.sites the domain is the request's Host header, port included: every
        # allowed host name (127.0.0.1, localhost, each port behind a proxy) would get its own
        # five tries. One account, one count.
        return (credentials.get("email") or credentials.get("username") or "").lower()

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
