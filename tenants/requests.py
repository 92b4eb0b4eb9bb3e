"""What a request carries once its tenant is resolved, for type checkers.

The console's ``CurrentOrganizationMiddleware`` and the API's ``ApiKeyAuthentication`` set
attributes that Django's ``HttpRequest`` and DRF's ``Request`` do not declare. Views annotate
``request`` with one of these classes instead; nothing here is instantiated, and at run time
the request is still Django's or DRF's own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest
from rest_framework.request import Request

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from .models import Agent, ApiKey, Membership, Organization
    from .ratelimit import RateLimitState


class ConsoleRequest(HttpRequest):
    """Any request past ``CurrentOrganizationMiddleware``: None for someone signed out or a
    member of no organization."""

    organization: Organization | None
    membership: Membership | None


class SignedInRequest(ConsoleRequest):
    """A view behind ``login_required``: someone is signed in (their organization may still be
    None)."""

    user: User


class OrganizationRequest(SignedInRequest):
    """A console view guarded by ``role_required``: the signed-in member and their
    organization, always set."""

    organization: Organization
    membership: Membership


class ApiRequest(Request):
    """An API request authenticated by ``ApiKeyAuthentication``: the key and its organization,
    plus the agent (agent keys) or the membership (personal keys). ``rate_limit`` is set once
    ``ApiKeyRateThrottle`` has counted the request."""

    api_key: ApiKey
    organization: Organization
    agent: Agent | None
    membership: Membership | None
    rate_limit: RateLimitState
