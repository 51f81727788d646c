"""OpenTelemetry (the [otel] extra), with the real SDK and its in-memory
exporter: a span for the API request, the enqueue, the claim, the send and
the completion; the enqueue's trace context on the outbox row, and the
send's span linked to it. Without the extra (or without a configured
provider) every hook is a no-op and nothing is stored."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox import enqueue_text, tracing
from tests.api_fixtures import auth
from tests.dispatch_helpers import REPO, run_dispatcher

_EXPORTER = InMemorySpanExporter()
CALLER_TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
CALLER_SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{CALLER_TRACE_ID:032x}-{CALLER_SPAN_ID:016x}-01"


@pytest.fixture(scope="module")
def _provider() -> Iterator[InMemorySpanExporter]:
    """The process's tracer provider, for this module's tests only: the API
    lets a process set it once, so afterwards it is unset again the way
    OpenTelemetry's own test utilities do it (later tests run untraced)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    try:
        yield _EXPORTER
    finally:
        provider.shutdown()
        trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
        trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
        assert not tracing.active()


@pytest.fixture
def spans(_provider: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    _provider.clear()
    yield _provider
    _provider.clear()


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def _ancestors(span: ReadableSpan, exporter: InMemorySpanExporter) -> list[int]:
    by_id = {s.context.span_id: s for s in exporter.get_finished_spans()}
    out = []
    parent = span.parent
    while parent is not None:
        out.append(parent.span_id)
        above = by_id.get(parent.span_id)
        parent = above.parent if above is not None else None
    return out


def _stored_context(engine: Engine, message_id: object) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT trace_context FROM outbox.outbox_messages "
                                 "WHERE message_id = :id"), {"id": message_id}).scalar_one()


def test_a_message_is_traced_from_the_request_to_the_send(
        spans: InMemorySpanExporter, api: httpx.Client, api_key, make_channel, sim,
        sim_url: str, api_db: Engine, database_url: str) -> None:
    key = api_key()
    channel = make_channel(base_url=sim_url)
    r = api.post("/v1/messages", headers={**auth(key), "traceparent": TRACEPARENT},
                 json={"channel_id": str(channel), "to": "+15550100001", "text": "traced"})
    assert r.status_code == 201, r.text
    message_id = r.json()["message_id"]

    # The request's span continues the caller's trace; the enqueue is inside it.
    (request,) = _named(spans, "POST /v1/messages")
    assert request.kind is SpanKind.SERVER
    assert request.context.trace_id == CALLER_TRACE_ID
    assert request.parent is not None and request.parent.span_id == CALLER_SPAN_ID
    assert request.attributes["http.route"] == "/v1/messages"
    assert request.attributes["http.response.status_code"] == 201
    (enqueue,) = _named(spans, "outbox.enqueue")
    assert request.context.span_id in _ancestors(enqueue, spans)
    assert enqueue.attributes["outbox.messages"] == 1

    # The row holds the enqueue span's W3C context, and nothing else (no baggage).
    stored = _stored_context(api_db, message_id)
    assert set(stored) == {"traceparent"}
    assert stored["traceparent"] == (f"00-{enqueue.context.trace_id:032x}-"
                                     f"{enqueue.context.span_id:016x}-01")

    # The send, later and elsewhere: a trace of its own, linked to the enqueue.
    spans.clear()
    summary = asyncio.run(run_dispatcher(database_url))
    assert summary.sent == 1
    assert [m.body for m in sim.sent()] == ["traced"]
    (claim,) = [s for s in _named(spans, "outbox.claim") if s.attributes["outbox.rows"]]
    assert claim.attributes["outbox.rows"] == 1
    (send,) = _named(spans, "outbox.send")
    assert send.kind is SpanKind.CLIENT
    assert send.context.trace_id != CALLER_TRACE_ID
    assert [(link.context.trace_id, link.context.span_id) for link in send.links] == [
        (enqueue.context.trace_id, enqueue.context.span_id)]
    assert send.attributes["outbox.message_id"] == message_id
    assert send.attributes["outbox.outcome"] == "sent"
    (complete,) = _named(spans, "outbox.complete")
    assert complete.attributes["outbox.rows"] == 1


def test_no_span_records_a_body_a_token_or_a_query_string(
        spans: InMemorySpanExporter, api: httpx.Client, api_key, make_channel,
        api_db: Engine) -> None:
    key = api_key()
    channel = make_channel()
    r = api.post("/v1/messages?token=querysecret", headers=auth(key),
                 json={"channel_id": str(channel), "to": "+15550100002", "text": "private words"})
    assert r.status_code == 201
    dumped = json.dumps([json.loads(s.to_json()) for s in spans.get_finished_spans()])
    for secret in ("private words", key, "querysecret"):
        assert secret not in dumped


def test_one_span_per_request_without_the_query_string(
        spans: InMemorySpanExporter, api: httpx.Client, api_key, api_db: Engine) -> None:
    """FastAPI's own request spans (with the query string) are off: ours only."""
    key = api_key()
    r = api.get("/v1/chats?limit=1&token=querysecret", headers=auth(key))
    assert r.status_code == 200
    assert [s.name for s in spans.get_finished_spans()] == ["GET /v1/chats"]
    (request,) = spans.get_finished_spans()
    assert request.context.trace_id != CALLER_TRACE_ID  # no traceparent: a trace of its own
    assert request.parent is None


def test_a_refused_request_and_a_failed_send_say_what_happened(
        spans: InMemorySpanExporter, api: httpx.Client, make_channel, sim, sim_url: str,
        api_db: Engine, database_url: str) -> None:
    r = api.post("/v1/messages", headers=auth("nope"), json={})
    assert r.status_code == 401
    (request,) = _named(spans, "POST /v1/messages")
    assert request.attributes["http.response.status_code"] == 401
    assert request.status.status_code is not StatusCode.ERROR  # the caller's mistake

    channel = make_channel(base_url=sim_url)
    with Session(api_db) as s, s.begin():
        enqueue_text(s, channel_id=channel, to="+15550100003", body="x")
    sim.set_faults(error_status=503)
    spans.clear()
    asyncio.run(run_dispatcher(database_url))
    (send,) = _named(spans, "outbox.send")
    assert send.attributes["outbox.outcome"] != "sent"


SCRIPT = textwrap.dedent("""
    import json, sys, uuid

    class NoSdk:  # as without the [otel] extra: the API only (FastAPI needs it)
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry.sdk" or name.startswith("opentelemetry.sdk."):
                raise ImportError(f"No module named {name!r}")

    if sys.argv[1] == "without-extra":
        sys.meta_path.insert(0, NoSdk())

    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    from outbox import enqueue_text, tracing
    from outbox.api import create_app
    from outbox.settings import Settings

    with Session(create_engine(sys.argv[2].replace("postgresql://", "postgresql+psycopg://",
                                                   1))) as s, s.begin():
        result = enqueue_text(s, channel_id=uuid.UUID(sys.argv[3]), to="+15550100009",
                              body="untraced")
        stored = s.execute(text("SELECT trace_context FROM outbox.outbox_messages "
                                "WHERE id = :id"), {"id": result.outbox_id}).scalar_one()
    app = create_app(Settings(database_url=sys.argv[2]))
    print(json.dumps({
        "active": tracing.active(),
        "sdk": sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk")),
        "stored": stored,
        "no_span": tracing.span("x") is tracing.NO_SPAN,
        "trace_context": tracing.current_trace_context(),
    }))
""")


@pytest.mark.slow  # over a second
@pytest.mark.parametrize("case", ["without-extra", "without-provider"])
def test_without_the_extra_or_a_provider_nothing_is_traced_or_stored(
        case: str, make_channel, clean_db: Engine, database_url: str) -> None:
    channel = make_channel()
    proc = subprocess.run([sys.executable, "-c", SCRIPT, case, database_url, str(channel)],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=os.environ)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["stored"] is None  # nothing to link to: no column written
    assert out["active"] is False and out["no_span"] is True
    assert out["trace_context"] is None
    if case == "without-extra":
        assert out["sdk"] == []
