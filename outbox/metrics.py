"""Prometheus metrics: counters fed by the API and the dispatcher, queue
gauges read from the database at scrape time.

* `dispatch_observer` is a dispatcher `Observer`: sent / retried / failed /
  released / rate-limited counters per channel.
* `TimedProvider` wraps a provider to time every send (the latency
  histogram) without touching the dispatcher.
* `QueueCollector` reads the queue gauges (queue depth by channel and
  status, the age of the oldest due message, the webhook backlog) with
  three cheap queries, at most once per `cache_seconds` however often it
  is scraped (several scrapers, or a scraper hammering the port, cost the
  database nothing more).
* Status callbacks and the event stream: `count_callback` (a
  `CallbackSender` observer) counts outcomes; `outbox_event_streams` is
  the open SSE streams of this process's hub; the deliveries waiting and
  the endpoints disabled are gauges read with the queue's.
* `start_metrics_server` serves /metrics on a listener of its own
  (OUTBOX_METRICS_HOST, loopback by default, and OUTBOX_METRICS_PORT) in
  `outbox run` and `outbox serve`. Never on the public listener: the
  metrics name every workspace's channels and queue depths, and that
  listener faces the internet (webhooks).

Counters live in this process: the API process counts what it enqueued
(and what its cron endpoint dispatched), a daemon counts what it sent.
Scrape every process; the gauges come from the database and are the same
everywhere.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from sqlalchemy import Engine, text

from outbox.db import metrics_queries as q
from outbox.db import pacing_queries
from outbox.dispatch.dispatcher import ClaimedRow, Dispatcher, Observer
from outbox.dispatch.outcomes import ChannelAction, Decision, Kind
from outbox.dispatch.runtime import Runtime
from outbox.providers.base import OutgoingMessage, Provider, SendResult
from outbox.settings import Settings
from outbox.states import DeliveryStatus

if TYPE_CHECKING:
    from outbox.events.callbacks import Outcome
    from outbox.events.hub import EventHub

log = structlog.get_logger(__name__)

SCRAPE_STATEMENT_TIMEOUT_MS = 2000  # a scrape must never hang on a busy database
GAUGE_CACHE_SECONDS = 5.0  # scrapes within this window share one read of the queue
LATENCY_BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

#: This process's counters (a registry of our own: importing twice, or two
#: apps in one process, never collides with prometheus_client's global one).
REGISTRY = CollectorRegistry(auto_describe=True)

ENQUEUED = Counter("outbox_messages_enqueued", "Messages enqueued through the HTTP API.",
                   ["channel"], registry=REGISTRY)
SENT = Counter("outbox_messages_sent", "Messages the provider accepted.", ["channel"],
               registry=REGISTRY)
RETRIED = Counter("outbox_messages_retried", "Sends that failed transiently and will be retried.",
                  ["channel"], registry=REGISTRY)
FAILED = Counter("outbox_messages_failed", "Messages dead-lettered (permanent error or "
                 "attempts exhausted).", ["channel"], registry=REGISTRY)
RELEASED = Counter("outbox_messages_released", "Claimed rows given back unsent (pause, "
                   "shutdown) without spending an attempt.", ["channel"], registry=REGISTRY)
RATE_LIMITED = Counter("outbox_rate_limited", "HTTP 429 answers; each pauses its channel.",
                       ["channel"], registry=REGISTRY)
CHANNEL_PROBLEMS = Counter("outbox_channel_problems", "Sends that paused or disabled a channel "
                           "(401, 402, 404).", ["channel", "action"], registry=REGISTRY)
AMBIGUOUS = Counter("outbox_sends_ambiguous", "Sends whose outcome is unknown (possible "
                    "duplicates on retry).", ["channel"], registry=REGISTRY)
SEND_LATENCY = Histogram("outbox_send_latency_seconds", "Provider send latency.", ["outcome"],
                         buckets=LATENCY_BUCKETS_SECONDS, registry=REGISTRY)
WEBHOOK_STATUSES = Counter("outbox_webhook_statuses", "Status webhook entries by result "
                           "(applied, unchanged, backlogged).", ["result"], registry=REGISTRY)
WEBHOOK_MESSAGES = Counter("outbox_webhook_messages", "Webhook message entries by result "
                           "(inserted, duplicate, echo).", ["result"], registry=REGISTRY)
WEBHOOK_ACTIONS = Counter("outbox_webhook_actions", "Reactions, edits and deletes by result "
                          "(applied, unchanged, pending).", ["result"], registry=REGISTRY)
WEBHOOK_IGNORED = Counter("outbox_webhook_ignored", "Webhook entries deliberately not used, "
                          "by kind (presences, action.vote, not_a_conversation.status, ...).",
                          ["kind"], registry=REGISTRY)
WEBHOOK_BODIES = Counter("outbox_webhook_bodies", "Webhook requests by event (type.method, "
                         "as Whapi or the URL named it) and whether a dead letter was kept.",
                         ["event", "dead_letter"], registry=REGISTRY)

CALLBACKS = Counter("outbox_callbacks", "Status callback attempts by outcome (delivered; "
                    "retried: will be posted again; failed: dead-lettered).", ["outcome"],
                    registry=REGISTRY)
EVENT_STREAMS = Gauge("outbox_event_streams", "Open SSE event streams (GET /v1/events/stream) "
                      "in this process.", registry=REGISTRY)

_BY_KIND = {Kind.SENT: SENT, Kind.RETRIED: RETRIED, Kind.FAILED: FAILED,
            Kind.RELEASED: RELEASED}
_CALLBACK_OUTCOMES = {"delivered": "delivered", "pending": "retried", "failed": "failed"}


def dispatch_observer(row: ClaimedRow, decision: Decision) -> None:
    """A dispatcher `Observer` (outbox.dispatcher.Observer)."""
    channel = str(row.channel_id)
    counter = _BY_KIND.get(decision.kind)
    if counter is not None:
        counter.labels(channel).inc()
    if decision.channel_action is ChannelAction.RATE_LIMIT:
        RATE_LIMITED.labels(channel).inc()
    elif decision.channel_action is not ChannelAction.NONE:
        CHANNEL_PROBLEMS.labels(channel, decision.channel_action.value).inc()
    if decision.ambiguous:
        AMBIGUOUS.labels(channel).inc()


def count_callback(outcome: Outcome) -> None:
    """A `CallbackSender` observer (outbox/events/callbacks.py)."""
    CALLBACKS.labels(_CALLBACK_OUTCOMES.get(outcome.status, str(outcome.status))).inc()


_HUBS: weakref.WeakSet[EventHub] = weakref.WeakSet()


def watch_event_hub(hub: EventHub) -> None:
    """Count this hub's clients in `outbox_event_streams` (read at scrape time)."""
    _HUBS.add(hub)
    EVENT_STREAMS.set_function(lambda: float(sum(h.clients for h in list(_HUBS))))


def count_enqueued(channel_id: object) -> None:
    ENQUEUED.labels(str(channel_id)).inc()


def count_webhook(result: Any, event: Any = None) -> None:
    """Count a `outbox.webhooks.WebhookResult` (`event`: the URL's EventName)."""
    for label, n in (("applied", result.statuses_applied),
                     ("unchanged", result.statuses_unchanged),
                     ("backlogged", result.statuses_backlogged)):
        if n:
            WEBHOOK_STATUSES.labels(label).inc(n)
    for label, n in (("inserted", result.messages_inserted),
                     ("duplicate", result.messages_duplicate), ("echo", result.echoes)):
        if n:
            WEBHOOK_MESSAGES.labels(label).inc(n)
    for label, n in (("applied", result.actions_applied),
                     ("unchanged", result.actions_unchanged),
                     ("pending", result.actions_pending)):
        if n:
            WEBHOOK_ACTIONS.labels(label).inc(n)
    for kind, n in result.ignored.items():
        WEBHOOK_IGNORED.labels(kind[:60]).inc(n)
    name = (f"{event.type or 'unknown'}.{event.method or 'unknown'}" if event is not None
            else "body")
    WEBHOOK_BODIES.labels(name, "yes" if result.dead_lettered else "no").inc()


class TimedProvider:
    """A provider that times each send into `outbox_send_latency_seconds`."""

    def __init__(self, inner: Provider) -> None:
        self._inner = inner

    async def send(self, *, base_url: str, token: str, message: OutgoingMessage) -> SendResult:
        started = time.perf_counter()
        result = await self._inner.send(base_url=base_url, token=token, message=message)
        SEND_LATENCY.labels(result.outcome.value).observe(time.perf_counter() - started)
        return result

    async def aclose(self) -> None:
        await self._inner.aclose()


def instrumented_dispatcher(runtime: Runtime, *,
                            observers: list[Observer] | None = None) -> Dispatcher:
    """A dispatcher whose sends are timed and whose outcomes are counted
    (the cron endpoint and the daemon)."""
    return runtime.dispatcher(provider=TimedProvider(runtime.provider),
                              observers=[dispatch_observer, *(observers or [])])


@dataclass(frozen=True)
class QueueReading:
    """One read of the queue gauges (None: the database could not be read)."""

    depth: list[tuple[str, str, float]] = field(default_factory=list)
    oldest: list[tuple[str, float]] = field(default_factory=list)
    backlog: float = 0.0
    # per paced channel: budget rows now, rows left today, new chats left
    # today, due rows held back
    pacing: list[tuple[str, float | None, float | None, float | None, float]] = field(
        default_factory=list)
    callbacks: CallbackReading | None = None
    up: bool = True


@dataclass(frozen=True)
class CallbackReading:
    """Status callbacks waiting (by status: pending, delivering) and
    endpoints disabled (by 410 or 3 days of failure)."""

    deliveries: list[tuple[str, float]] = field(default_factory=list)
    endpoints_disabled: float = 0.0


class QueueCollector:
    """Queue gauges, read from the database at most once per `cache_seconds`."""

    def __init__(self, engine: Engine, *, cache_seconds: float = GAUGE_CACHE_SECONDS) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._lock = threading.Lock()  # scrapes arrive on several server threads
        self._reading: QueueReading | None = None
        self._read_at = 0.0

    def collect(self) -> Iterator[Metric]:
        reading = self._current()
        up = GaugeMetricFamily("outbox_metrics_database_up",
                               "1 if the scrape could read the queue from the database.")
        up.add_metric([], 1.0 if reading.up else 0.0)
        if not reading.up:
            yield up
            return
        depth = GaugeMetricFamily("outbox_queue_depth",
                                  "Outbox rows by channel and status (queued, sending, failed).",
                                  labels=["channel", "status"])
        for channel, status, n in reading.depth:
            depth.add_metric([channel, status], n)
        oldest = GaugeMetricFamily("outbox_oldest_due_seconds",
                                   "Age of the oldest due, unsent message per channel.",
                                   labels=["channel"])
        for channel, seconds in reading.oldest:
            oldest.add_metric([channel], seconds)
        backlog = GaugeMetricFamily("outbox_webhook_status_backlog",
                                    "Status webhooks waiting for their message's WhatsApp id.")
        backlog.add_metric([], reading.backlog)
        yield from (depth, oldest, backlog, *_pacing_gauges(reading),
                    *_callback_gauges(reading.callbacks), up)

    def _current(self) -> QueueReading:
        with self._lock:
            now = time.monotonic()
            if self._reading is None or now - self._read_at >= self._cache_seconds:
                self._reading = self._read()
                self._read_at = time.monotonic()
            return self._reading

    def _read(self) -> QueueReading:
        try:
            with self._engine.begin() as conn:
                conn.execute(text(q.SCRAPE_TIMEOUT),
                             {"milliseconds": SCRAPE_STATEMENT_TIMEOUT_MS})
                depth = [(str(r.channel_id), r.status, float(r.n))
                         for r in conn.execute(text(q.METRICS_QUEUE_DEPTH))]
                oldest = [(str(r.channel_id), float(r.seconds))
                          for r in conn.execute(text(q.METRICS_OLDEST_DUE))]
                backlog = float(conn.execute(text(q.METRICS_STATUS_BACKLOG)).scalar_one())
                pacing = [
                    (str(r.channel_id),
                     None if r.rows_left is None else float(r.rows_left),
                     None if r.day_cap is None
                     else max(0.0, float(r.day_cap) - float(r.day_used)),
                     None if r.new_chats_left is None else float(r.new_chats_left),
                     float(r.held_back))
                    for r in conn.execute(text(pacing_queries.PACING_OVERVIEW),
                                          {"workspace_id": None})]
                callbacks = _read_callbacks(conn)
        except Exception as exc:  # a scrape reports the outage, it doesn't fail
            log.warning("metrics_queue_query_failed", error=type(exc).__name__)
            return QueueReading(up=False)
        return QueueReading(depth=depth, oldest=oldest, backlog=backlog, pacing=pacing,
                            callbacks=callbacks)


def _read_callbacks(conn: Any) -> CallbackReading:
    deliveries = [(r.status, float(r.n)) for r in conn.execute(text(q.METRICS_CALLBACKS_WAITING))]
    disabled = float(conn.execute(text(q.METRICS_ENDPOINTS_DISABLED)).scalar_one())
    return CallbackReading(deliveries, disabled)


def _callback_gauges(reading: CallbackReading | None) -> list[GaugeMetricFamily]:
    waiting = GaugeMetricFamily("outbox_callback_deliveries",
                                "Status callbacks not yet delivered, by status (pending: "
                                "waiting for their time or a slot; delivering: on the wire).",
                                labels=["status"])
    disabled = GaugeMetricFamily("outbox_callback_endpoints_disabled",
                                 "Webhook endpoints disabled (410 Gone, or failing 3 days).")
    counts = dict(reading.deliveries) if reading else {}
    for status in (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING):
        waiting.add_metric([status.value], counts.get(status, 0.0))
    disabled.add_metric([], reading.endpoints_disabled if reading else 0.0)
    return [waiting, disabled]


def _pacing_gauges(reading: QueueReading) -> list[GaugeMetricFamily]:
    """Paced channels' budgets now, and the due rows pacing holds back
    (distinct from paused channels' rows and from rows not yet due)."""
    rows = GaugeMetricFamily("outbox_pacing_budget_rows",
                             "Rows a claim may take now on a paced channel (its budget).",
                             labels=["channel"])
    day = GaugeMetricFamily("outbox_pacing_day_left",
                            "Rows left today under a paced channel's daily cap.",
                            labels=["channel"])
    new_chats = GaugeMetricFamily("outbox_pacing_new_chats_left",
                                  "New chats a paced channel may still open today.",
                                  labels=["channel"])
    held = GaugeMetricFamily("outbox_pacing_held_back",
                             "Due rows the claim skips because their channel is out of budget, "
                             "or their chat is (new-chat cap spent, within the chat gap).",
                             labels=["channel"])
    for channel, rows_left, day_left, new_chats_left, held_back in reading.pacing:
        if rows_left is not None:
            rows.add_metric([channel], rows_left)
        if day_left is not None:
            day.add_metric([channel], day_left)
        if new_chats_left is not None:
            new_chats.add_metric([channel], new_chats_left)
        held.add_metric([channel], held_back)
    return [rows, day, new_chats, held]


class _Combined:
    """This process's counters plus the queue gauges, as one collector."""

    def __init__(self, engine: Engine, *, cache_seconds: float) -> None:
        self._queue = QueueCollector(engine, cache_seconds=cache_seconds)

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from self._queue.collect()


def build_registry(engine: Engine, *,
                   cache_seconds: float = GAUGE_CACHE_SECONDS) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Combined(engine, cache_seconds=cache_seconds))
    return registry


class MetricsServer:
    """/metrics on a listener of its own, in background threads."""

    def __init__(self, server: Any, thread: threading.Thread, engine: Engine) -> None:
        self._server = server
        self._thread = thread
        self.engine = engine

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.engine.dispose()


def start_metrics_server(port: int, *, engine: Engine, host: str = "127.0.0.1",
                         cache_seconds: float = GAUGE_CACHE_SECONDS) -> MetricsServer:
    """Serve /metrics on host:port (OUTBOX_METRICS_HOST, OUTBOX_METRICS_PORT).

    Loopback by default: a scraper on another host is a decision (set
    OUTBOX_METRICS_HOST to the interface it reaches), not an accident.
    `engine`: its own small pool, so a scrape never waits behind sends.
    """
    server, thread = start_http_server(port, addr=host,
                                       registry=build_registry(engine,
                                                               cache_seconds=cache_seconds))
    metrics = MetricsServer(server, thread, engine)
    log.info("metrics_server_started", host=metrics.address[0], port=metrics.address[1])
    return metrics


def serve_metrics(settings: Settings) -> MetricsServer | None:
    """The metrics listener of `outbox run` and `outbox serve`: started when
    OUTBOX_METRICS_PORT is set."""
    if not settings.metrics_port:
        return None
    from outbox.database import database_url, make_engine

    engine = make_engine(database_url(settings), pool_size=1, pooler=settings.db_pooler,
                         schema=settings.db_schema)
    return start_metrics_server(settings.metrics_port, engine=engine,
                                host=settings.metrics_host,
                                cache_seconds=settings.metrics_cache_seconds)
