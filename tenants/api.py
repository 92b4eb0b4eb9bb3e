"""The base view of the public API (keeps DRF's view module out of ``tenants.auth``'s imports)."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.views import APIView

from .auth import ApiKeyRateThrottle


class KeyedAPIView(APIView):
    """Base view of the public API: API-key auth, scopes, per-key limits and their headers.

    ``required_scope`` is a scope, or a dict of HTTP method → scope.
    """

    throttle_classes = [ApiKeyRateThrottle]
    required_scope: str | dict[str, str] | None = None

    def scope_for(self, method: str) -> str | None:
        if isinstance(self.required_scope, dict):
            return self.required_scope.get(method)
        return self.required_scope

    def check_permissions(self, request: Request) -> None:
        # DRF checks permissions before throttles. Count first: a refused scope (403) is still an
        # answer to an authenticated key, so it spends the key's budget and carries the headers.
        self.check_throttles(request)
        super().check_permissions(request)

    def check_throttles(self, request: Request) -> None:
        if getattr(request, "rate_limit", None) is None:  # once, not again after the permissions
            super().check_throttles(request)

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        state = getattr(request, "rate_limit", None)
        if state is not None:
            for name, value in state.headers().items():
                response[name] = value
        return response
