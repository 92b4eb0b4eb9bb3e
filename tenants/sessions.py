"""Console sessions outside the request cycle: the live queue's websockets belong to the session
that opened them, and end with it.

A socket joins its session's group (``session_group``); signing out (the console's or admin's,
both through ``django.contrib.auth.logout``) announces the end to that group, and every socket of
the session closes at once, in whichever process it lives. A session that ends without a sign-out
(deleted, expired, or invalidated by a password change) is caught by the sockets' periodic
re-check, ``session_user_id``.
"""

from __future__ import annotations

import hashlib
from importlib import import_module
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.utils.crypto import constant_time_compare

SESSION_ENDED = "session.ended"


def session_group(session_key: str) -> str:
    """The channel-layer group of one session's sockets (a digest: the key itself is a secret)."""
    return "session." + hashlib.sha256(session_key.encode()).hexdigest()[:40]


def session_end_announce(session_key: str | None) -> None:
    """Close every socket of this session, in every process."""
    layer = get_channel_layer()
    if layer is None or not session_key:
        return
    async_to_sync(layer.group_send)(session_group(session_key), {"type": SESSION_ENDED})


def on_user_logged_out(sender: Any, request: Any, **kwargs: Any) -> None:
    """``user_logged_out`` receiver; the session is still intact when it is sent."""
    session = getattr(request, "session", None)
    session_end_announce(session.session_key if session is not None else None)


def session_user_id(session_key: str) -> int | None:
    """The user this session is still signed in as, or None when it has ended: gone from the
    store, signed out, or no longer matching the user's password (Django's session hash).
    Synchronous (session store and database)."""
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key=session_key)
    user_id = session.get(SESSION_KEY)
    if user_id is None:
        return None
    user = get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()
    if user is None:
        return None
    stored_hash = session.get(HASH_SESSION_KEY) or ""
    if not constant_time_compare(stored_hash, user.get_session_auth_hash()):
        return None
    return user.pk
