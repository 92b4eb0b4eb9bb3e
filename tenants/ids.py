"""Opaque, prefixed public ids (``org_…``, ``agt_…``, ``esc_…``) and base62 helpers."""

from __future__ import annotations

import re
import secrets
import string
from typing import TypeVar

from django.db.models import Model, QuerySet
from django.http import Http404

ModelT = TypeVar("ModelT", bound=Model)

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
PUBLIC_ID_LENGTH = 20  # ~119 bits: unguessable, so ids leak nothing and cannot be enumerated


def random_base62(length: int) -> str:
    return "".join(secrets.choice(BASE62) for _ in range(length))


def encode_base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits)).rjust(width, "0")


def new_public_id(prefix: str) -> str:
    return f"{prefix}_{random_base62(PUBLIC_ID_LENGTH)}"


_PUBLIC_ID = re.compile(r"([a-z]{2,4})_[0-9A-Za-z]{1,60}")


def is_public_id(value: str, prefix: str) -> bool:
    """Whether ``value`` could be a ``prefix`` id. Anything else is not found without a query;
    PostgreSQL would even refuse some of it (a NUL byte in a path makes psycopg raise)."""
    match = _PUBLIC_ID.fullmatch(value)
    return match is not None and match.group(1) == prefix


def get_by_public_id_or_404(queryset: QuerySet[ModelT], prefix: str, public_id: str) -> ModelT:
    """The one object of ``queryset`` (already narrowed to the person, as for one's own contact
    points) with this ``prefix`` id, else 404: another tenant's object, a missing one and a
    malformed id all look the same, and a malformed id never reaches the database. An
    organization's objects are looked up with ``tenants.lookups.get_for_organization_or_404``."""
    if not is_public_id(public_id, prefix):
        raise Http404
    found = queryset.filter(public_id=public_id).first()
    if found is None:
        raise Http404
    return found
