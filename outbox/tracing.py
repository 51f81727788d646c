"""Optional OpenTelemetry tracing (`pip install whapi-outbox[otel]`).

Spans: the HTTP API's requests (`outbox.api.tracing`), each enqueue, each
claim, each send and each completion batch. The enqueue's trace context
(W3C `traceparent`/`tracestate`, nothing else: baggage may hold what the
caller never meant to store) is written on the outbox row, and the send
span links back to it: the send happens later, in another process, so it
is a trace of its own with a link, not a child.

Spans go to the global tracer provider: the application's (when it
configures one and enqueues through the library), or the one
`opentelemetry-instrument outbox run` sets up from the OTEL_* variables.

Until a provider is set (without the extra there is no SDK to set one
with; the OpenTelemetry API itself may be there, FastAPI depends on it),
`active()` is False and every hook is a no-op: `span()` hands back one
shared object, no span or attribute is made, no trace context is stored
and the dispatcher reads none. The check is one global read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

try:
    from opentelemetry import trace
    from opentelemetry.trace import Link, ProxyTracerProvider, SpanKind, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # not even the OpenTelemetry API is installed
    ENABLED = False
else:
    ENABLED = True
    _PROPAGATOR = TraceContextTextMapPropagator()
    _KINDS = {"internal": SpanKind.INTERNAL, "server": SpanKind.SERVER,
              "client": SpanKind.CLIENT, "producer": SpanKind.PRODUCER,
              "consumer": SpanKind.CONSUMER}

TRACER_NAME = "whapi-outbox"


class _NoSpan:
    """What `span()` gives without OpenTelemetry: accepts everything, does nothing."""

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def is_recording(self) -> bool:
        return False


NO_SPAN = _NoSpan()


def _tracer() -> Any:
    # Asked each time, not cached: the application may set its provider
    # after importing us (the API's proxy would follow, a cached SDK tracer not).
    from outbox import __version__

    return trace.get_tracer(TRACER_NAME, __version__)


def active() -> bool:
    """Whether a tracer provider is set (the API's default is a proxy until then)."""
    return ENABLED and not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)


def span(name: str, *, kind: str = "internal", attributes: Mapping[str, Any] | None = None,
         links: Sequence[Any] = (), context: Any = None) -> Any:
    """A context manager: the span (current inside the block), or NO_SPAN."""
    if not active():
        return NO_SPAN
    return _tracer().start_as_current_span(name, context=context, kind=_KINDS[kind],
                                           attributes=dict(attributes or {}), links=links,
                                           record_exception=True, set_status_on_exception=True)


def current_trace_context() -> str | None:
    """The current span's W3C trace context as JSON (for the outbox row), or
    None when nothing is being traced."""
    if not active() or not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return json.dumps(carrier, separators=(",", ":")) if carrier else None


def links_to(carrier: Mapping[str, str] | None) -> list[Any]:
    """A link to the span whose trace context a row stored (none if it stored none)."""
    if not carrier or not active():
        return []
    context = trace.get_current_span(_PROPAGATOR.extract(dict(carrier))).get_span_context()
    return [Link(context)] if context.is_valid else []


def extract(headers: Mapping[str, str]) -> Any:
    """The caller's trace context from request headers (traceparent), or None."""
    if "traceparent" not in headers or not active():
        return None
    return _PROPAGATOR.extract(dict(headers))


def mark_error(span_: Any, description: str) -> None:
    if span_ is not NO_SPAN:
        span_.set_status(StatusCode.ERROR, description)
