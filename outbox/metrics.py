"""Prometheus metrics: counters fed by the API and the dispatcher, queue
gauges read from the database at scrape time.

* `dispatch_observer` is a dispatcher `Observer`: sent / retried / failed /
  released / rate-limited counters per channel.
* `TimedProvider` wraps a provider to time every send (the latency
  histogram) without touching the dispatcher.
* `QueueCollector` runs two cheap queries per scrape (partial indexes only):
  queue depth by channel and status, and the age of the oldest due message.
* `render(engine)` is what `GET /metrics` returns; `start_metrics_server`
  serves the same on a port of its own (the daemon, OUTBOX_METRICS_PORT).

Counters live in this process: the API process counts what it enqueued
(and what its cron endpoint dispatched), a daemon counts what it sent.
Scrape every process; the gauges come from the database and are the same
everywhere.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from sqlalchemy import Connection, Engine, text

from outbox.db import metrics_queries as q
from outbox.db import pacing_queries
from outbox.dispatch.dispatcher import ClaimedRow, Dispatcher, Observer
from outbox.dispatch.outcomes import ChannelAction, Decision, Kind
from outbox.dispatch.runtime import Runtime
from outbox.providers.base import OutgoingMessage, Provider, SendResult

log = structlog.get_logger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SCRAPE_STATEMENT_TIMEOUT_MS = 2000  # a scrape must never hang on a busy database
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

_BY_KIND = {Kind.SENT: SENT, Kind.RETRIED: RETRIED, Kind.FAILED: FAILED,
            Kind.RELEASED: RELEASED}


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


class QueueCollector:
    """Queue gauges, read from the database at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("outbox_queue_depth",
                                  "Outbox rows by channel and status (queued, sending, failed).",
                                  labels=["channel", "status"])
        oldest = GaugeMetricFamily("outbox_oldest_due_seconds",
                                   "Age of the oldest due, unsent message per channel.",
                                   labels=["channel"])
        backlog = GaugeMetricFamily("outbox_webhook_status_backlog",
                                    "Status webhooks waiting for their message's WhatsApp id.")
        up = GaugeMetricFamily("outbox_metrics_database_up",
                               "1 if the scrape could read the queue from the database.")
        try:
            with self._engine.begin() as conn:
                conn.execute(text(q.SCRAPE_TIMEOUT),
                             {"milliseconds": SCRAPE_STATEMENT_TIMEOUT_MS})
                for r in conn.execute(text(q.METRICS_QUEUE_DEPTH)):
                    depth.add_metric([str(r.channel_id), r.status], float(r.n))
                for r in conn.execute(text(q.METRICS_OLDEST_DUE)):
                    oldest.add_metric([str(r.channel_id)], float(r.seconds))
                backlog.add_metric([], float(conn.execute(
                    text(q.METRICS_STATUS_BACKLOG)).scalar_one()))
                paced = _pacing_gauges(conn)
            up.add_metric([], 1.0)
        except Exception as exc:  # a scrape reports the outage, it doesn't fail
            log.warning("metrics_queue_query_failed", error=type(exc).__name__)
            up.add_metric([], 0.0)
            yield up
            return
        yield from (depth, oldest, backlog, *paced, up)


def _pacing_gauges(conn: Connection) -> list[GaugeMetricFamily]:
    """Paced channels' budgets now, and the due rows pacing holds back
    (distinct from paused channels' rows and from rows not yet due)."""
    rows = GaugeMetricFamily("outbox_pacing_budget_rows",
                             "Rows a claim may take now on a paced channel (its budget).",
                             labels=["channel"])
    day = GaugeMetricFamily("outbox_pacing_day_left",
                            "Rows left today under a paced channel's daily cap.",
                            labels=["channel"])
    held = GaugeMetricFamily("outbox_pacing_held_back",
                             "Due rows the claim skips because their channel is out of budget.",
                             labels=["channel"])
    for r in conn.execute(text(pacing_queries.PACING_OVERVIEW), {"workspace_id": None}):
        channel = [str(r.channel_id)]
        if r.rows_left is not None:
            rows.add_metric(channel, float(r.rows_left))
        if r.day_cap is not None:
            day.add_metric(channel, max(0.0, float(r.day_cap) - float(r.day_used)))
        held.add_metric(channel, float(r.held_back))
    return [rows, day, held]


class _Combined:
    """This process's counters plus the queue gauges, as one collector."""

    def __init__(self, engine: Engine) -> None:
        self._queue = QueueCollector(engine)

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from self._queue.collect()


def build_registry(engine: Engine) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Combined(engine))
    return registry


def render(engine: Engine) -> bytes:
    """The Prometheus text exposition of everything (for GET /metrics)."""
    return generate_latest(build_registry(engine))


def start_metrics_server(port: int, *, database_url: str, addr: str = "0.0.0.0") -> Any:  # noqa: S104
    """Serve /metrics on `port` in a background thread (for the daemon).

    Binds all interfaces by default: the scraper is usually on another host.
    Returns prometheus_client's (server, thread) pair.
    """
    from outbox.database import make_engine

    engine = make_engine(database_url, pool_size=1)
    server = start_http_server(port, addr=addr, registry=build_registry(engine))
    log.info("metrics_server_started", port=port)
    return server
