"""How API requests are authenticated, scoped and rate-limited.

The tenant is resolved once per request: ``request.organization`` and ``request.api_key`` are set
here, plus ``request.agent`` (agent keys) or ``request.membership`` (personal keys). Every query in
the API starts from ``request.organization``, so another tenant's object is simply not found.
"""

from __future__ import annotations

from typing import Any, cast

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from awaithuman.middleware import organization_var

from .models import ApiKey
from .ratelimit import rate_limit_hit
from .requests import ApiRequest
from .services import KeyRejected, api_key_authenticate


class ApiKeyAuthentication(BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiKey] | None:
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != self.keyword.lower().encode() or len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Send the key as 'Authorization: Bearer ahk_live_…'."
            )
        try:
            plaintext = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The API key is not valid.") from None
        try:
            api_key = api_key_authenticate(plaintext)
        except KeyRejected as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        scoped = cast(ApiRequest, request)  # what the views read, as ApiRequest declares it
        scoped.api_key = api_key
        scoped.organization = api_key.organization
        scoped.agent = api_key.agent
        scoped.membership = membership = api_key.membership
        organization_var.set(api_key.organization.public_id)
        user = membership.user if membership is not None else AnonymousUser()
        return user, api_key

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'


class HasScope(BasePermission):
    """The view's ``required_scope`` must be one of the key's scopes."""

    def has_permission(self, request: Request, view: Any) -> bool:
        api_key = getattr(request, "api_key", None)
        if api_key is None:
            raise exceptions.NotAuthenticated(
                "Authenticate with 'Authorization: Bearer <your API key>'."
            )
        scope = view.scope_for(request.method) if hasattr(view, "scope_for") else None
        if scope is None:
            return True
        if not api_key.has_scope(scope):
            raise exceptions.PermissionDenied(
                f"This API key lacks the '{scope}' scope needed for this call."
            )
        return True


class ApiKeyRateThrottle(BaseThrottle):
    """Counts the request against its key; the state is kept for the response headers."""

    def allow_request(self, request: Request, view: Any) -> bool:
        api_key = getattr(request, "api_key", None)
        if api_key is None:
            return True
        state = rate_limit_hit(api_key.key_id, api_key.rate_limit)
        cast(ApiRequest, request).rate_limit = state
        self._wait = state.reset_seconds
        return state.allowed

    def wait(self) -> float:
        return self._wait


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "ahk_live_… API key",
        }
