"""OpenTelemetry traces: off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (and the ``[otel]``
extra installed).

``telemetry_setup`` (called by the ASGI application and by each Celery worker process) installs a
tracer provider exporting over OTLP/HTTP and instruments Django, psycopg, Redis, Celery and httpx.
The standard ``OTEL_*`` variables (``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_HEADERS``, …)
configure the exporter.

A trace crosses from the web process to the worker in two ways: Celery's instrumentation carries
it in the headers of every task it queues, and the outbox row of a change carries the trace of the
request that made the change (``trace_carrier``, in the row's payload) to the dispatcher, which
hands each consumer its events inside that trace (``continued``): the notification sent for a
create, and the callback POSTed for a decision, belong to the request that caused them, and the
callback's ``traceparent`` header takes the trace on to the agent.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

try:  # the [otel] extra
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - depends on the installed extras
    INSTALLED = False
else:
    INSTALLED = True

TRACE_KEY = "trace"
_configured = False


def enabled() -> bool:
    return INSTALLED and bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def telemetry_setup(exporter: Any = None) -> bool:
    """Trace this process if tracing is on; returns whether it is. ``exporter`` replaces the
    OTLP exporter (the tests pass an in-memory one); it is sent spans as they end."""
    global _configured
    if _configured or not (enabled() or exporter is not None):
        return _configured
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME", "awaithuman")
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()
    PsycopgInstrumentor().instrument()
    RedisInstrumentor().instrument()
    CeleryInstrumentor().instrument()
    HTTPXClientInstrumentor().instrument()
    _configured = True
    return True


def trace_carrier() -> dict[str, str]:
    """The current trace as W3C ``traceparent`` headers, or ``{}`` when nothing is traced."""
    if not _configured:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextlib.contextmanager
def continued(carrier: dict[str, str] | None, name: str) -> Iterator[None]:
    """Run the block as a span ``name`` in the trace ``carrier`` names (as is, without one).

    The span links to the span that was current, if any (the request or task that runs the
    block), so that its own trace still leads here.
    """
    if not _configured or not carrier:
        yield
        return
    current = trace.get_current_span().get_span_context()
    links = [trace.Link(current)] if current.is_valid else []
    token = otel_context.attach(propagate.extract(carrier))
    try:
        with trace.get_tracer(__name__).start_as_current_span(name, links=links):
            yield
    finally:
        otel_context.detach(token)
