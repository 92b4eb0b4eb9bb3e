"""The ASGI application: API, admin and console through Django; the long-poll ahead of it.

``/ws/queue/`` is the operators' live queue: session-authenticated and origin-checked, exactly
(scheme, host and port: a page on another site, or on another port of this host, cannot open a
socket with an operator's cookies).
``/api/v1/escalations/{id}/wait`` is routed to an async consumer *before* Django's handler, which
would otherwise pin an OS thread per parked request. In the embedded default the same process also
ticks the escalation timers.
"""

from __future__ import annotations

import os

import django
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "awaithuman.settings")
# What get_asgi_application does, with tracing set up (if on) before Django's handler loads its
# middleware: the Django instrumentation adds its own.
django.setup(set_prefix=False)
from awaithuman.telemetry import telemetry_setup  # noqa: E402

telemetry_setup()
django_application = ASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from awaithuman.origins import ExactOriginValidator  # noqa: E402
from escalations.consumers import QueueConsumer, wait_endpoint  # noqa: E402
from escalations.timers import start_in_process_ticker  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                # Channels' URLRouter routes to ASGI applications; django-stubs types re_path's
                # second argument as a Django view only.
                re_path(r"^api/v1/escalations/(?P<public_id>[^/]+)/wait/?$", wait_endpoint),  # type: ignore[arg-type]
                re_path(r"", django_application),  # type: ignore[arg-type]
            ]
        ),
        "websocket": ExactOriginValidator(
            AuthMiddlewareStack(URLRouter([re_path(r"^ws/queue/$", QueueConsumer.as_asgi())]))
        ),
    }
)

if settings.TIMERS_IN_PROCESS:
    # The embedded default has no Celery beat: this process runs beat's schedule itself (the
    # escalation timers, the outbox dispatch, notification and webhook retries, …).
    start_in_process_ticker()
