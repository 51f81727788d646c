"""A span per HTTP request (OpenTelemetry, once a tracer provider is set).

An ASGI middleware rather than a FastAPI dependency: it sees every request,
including the ones routing or authentication turns away. The span
continues the caller's trace (a `traceparent` header); it is named by the
route's template (`POST /v1/messages`), never the raw path's ids, and
records neither headers nor bodies nor the query string (tokens, content).
FastAPI releases with telemetry of their own make a request span too, with
the query string in it: `FASTAPI_TELEMETRY` turns theirs off, so there is
one span per request, ours. Until a provider is set, a request only passes
through one check here.
"""

from __future__ import annotations

import inspect
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outbox import tracing

_TRACE_HEADERS = (b"traceparent", b"tracestate")


# FastAPI(telemetry=...) where FastAPI has it: no request or operation spans of its own.
FASTAPI_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "operation_spans": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters else {})


class TracingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not tracing.active():
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1")
                   for k, v in scope["headers"] if k in _TRACE_HEADERS}
        method = scope["method"]
        status: dict[str, int] = {}

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        with tracing.span(method, kind="server", context=tracing.extract(headers),
                          attributes={"http.request.method": method}) as span:
            await self.app(scope, receive, send_and_note)
            route: Any = scope.get("route")
            if route is not None and getattr(route, "path", None):
                span.update_name(f"{method} {route.path}")
                span.set_attribute("http.route", route.path)
            code = status.get("code")
            if code is not None:
                span.set_attribute("http.response.status_code", code)
                if code >= 500:
                    tracing.mark_error(span, f"HTTP {code}")
