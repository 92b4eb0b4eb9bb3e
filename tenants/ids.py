"""Opaque, prefixed public ids (``org_…``, ``agt_…``, ``esc_…``) and base62 helpers."""

from __future__ import annotations

import re
import secrets
import string

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


_PUBLIC_ID = re.compile(r"[a-z]{3}_[0-9A-Za-z]{1,60}")


def is_public_id(value: str, prefix: str) -> bool:
    """Whether ``value`` could be a ``prefix`` id. Anything else is not found without a query;
    PostgreSQL would even refuse some of it (a NUL byte in a path makes psycopg raise)."""
    return value.startswith(f"{prefix}_") and _PUBLIC_ID.fullmatch(value) is not None
