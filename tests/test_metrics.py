"""/metrics (Prometheus text) on its own listener moves as messages flow:
enqueued over the API, queue depth and oldest due age from the database,
sent and latency from a dispatch (the cron endpoint), webhook counters.
The public listener serves no metrics; the listener binds loopback unless
told otherwise; scrapes within the cache window read the database once."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, event, text

from outbox.db import metrics_queries as q
from outbox.metrics import MetricsServer, start_metrics_server
from outbox.webhooks.apply import SECRET_HEADER
from tests.api_fixtures import CRON_SECRET, auth, wait_for, webhook_secret
from tests.dispatch_helpers import REPO
from tests.sim_fixtures import unused_port


def _scrape(text_body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text_body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@contextlib.contextmanager
def metrics_server(database_url: str, **kwargs: Any) -> Iterator[MetricsServer]:
    from outbox.database import make_engine

    server = start_metrics_server(0, engine=make_engine(database_url, pool_size=1), **kwargs)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def scrape_url(database_url: str) -> Iterator[str]:
    """This process's metrics listener (the API under test runs in this
    process, so its counters are here), read afresh on every scrape."""
    with metrics_server(database_url, cache_seconds=0) as server:
        host, port = server.address
        yield f"http://{host}:{port}/metrics"


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["content-type"].startswith("text/plain")
        body: str = r.read().decode()
    return body


@pytest.fixture
def metrics(scrape_url: str) -> Any:
    return lambda: _scrape(_get(scrape_url))


def test_metrics_move_as_messages_flow(api: httpx.Client, api_key, make_channel, sim,
                                       sim_url: str, api_db: Engine, metrics: Any) -> None:
    key = api_key()
    ch = make_channel(base_url=sim_url)
    c = (("channel", str(ch)),)
    before = metrics()
    assert before[("outbox_metrics_database_up", ())] == 1.0
    assert ("outbox_queue_depth", (*c, ("status", "queued"))) not in before

    for n in range(4):
        r = api.post("/v1/messages", headers=auth(key), json={
            "channel_id": str(ch), "to": f"+1555010000{n}", "text": f"m{n}",
            "idempotency_key": f"k{n}"})
        assert r.status_code == 201
    # a duplicate is not counted again
    api.post("/v1/messages", headers=auth(key), json={
        "channel_id": str(ch), "to": "+15550100000", "text": "m0", "idempotency_key": "k0"})
    with api_db.begin() as conn:  # make them look a minute old
        conn.execute(text("UPDATE outbox.outbox_messages "
                          "SET next_attempt_at = now() - interval '60 s'"))
    queued = metrics()
    assert queued[("outbox_messages_enqueued_total", c)] - before.get(
        ("outbox_messages_enqueued_total", c), 0) == 4
    assert queued[("outbox_queue_depth", (*c, ("status", "queued")))] == 4
    assert queued[("outbox_oldest_due_seconds", c)] >= 59

    latency_before = before.get(("outbox_send_latency_seconds_count", (("outcome", "sent"),)), 0)
    r = api.post("/v1/cron/dispatch", headers=auth(CRON_SECRET))
    assert r.json()["sent"] == 4
    sent = metrics()
    assert sent[("outbox_messages_sent_total", c)] == 4
    assert ("outbox_queue_depth", (*c, ("status", "queued"))) not in sent
    assert ("outbox_oldest_due_seconds", c) not in sent
    assert sent[("outbox_send_latency_seconds_count", (("outcome", "sent"),))] - latency_before == 4

    # a webhook for a message we don't know yet: the backlog gauge and the counter
    applied_before = sent.get(("outbox_webhook_statuses_total", (("result", "backlogged"),)), 0)
    hook = api.post(f"/webhooks/whapi/{ch}", headers={SECRET_HEADER: webhook_secret(api_db, ch)},
                    content=json.dumps({"statuses": [{"id": "nobody", "status": "read"}]}))
    assert hook.status_code == 200
    after = metrics()
    assert after[("outbox_webhook_status_backlog", ())] == 1
    assert after[("outbox_webhook_statuses_total", (("result", "backlogged"),))] \
        - applied_before == 1


def test_failures_and_rate_limits_are_counted(api: httpx.Client, api_key, make_channel, sim,
                                              sim_url: str, api_db: Engine,
                                              metrics: Any) -> None:
    key = api_key()
    ch = make_channel(base_url=sim_url)
    c = (("channel", str(ch)),)
    sim.set_faults(error_status=400)
    api.post("/v1/messages", headers=auth(key),
             json={"channel_id": str(ch), "to": "+15550100001", "text": "x"})
    api.post("/v1/cron/dispatch", headers=auth(CRON_SECRET))
    m = metrics()
    assert m[("outbox_messages_failed_total", c)] == 1
    assert m[("outbox_queue_depth", (*c, ("status", "failed")))] == 1

    sim.set_faults(error_status=429, retry_after=120)
    api.post("/v1/messages", headers=auth(key),
             json={"channel_id": str(ch), "to": "+15550100002", "text": "y"})
    api.post("/v1/cron/dispatch", headers=auth(CRON_SECRET))
    m = metrics()
    assert m[("outbox_rate_limited_total", c)] == 1
    assert m[("outbox_queue_depth", (*c, ("status", "queued")))] == 1


def test_the_public_listener_serves_no_metrics(api: httpx.Client) -> None:
    """The public listener faces the internet (webhooks): metrics there would
    show anyone every workspace's channel ids and queue depths."""
    r = api.get("/metrics")
    assert r.status_code == 404
    assert "outbox_queue_depth" not in r.text
    assert "/metrics" not in api.get("/openapi.json").json()["paths"]


def test_the_metrics_listener_binds_loopback_unless_told(database_url: str) -> None:
    from outbox.metrics import serve_metrics
    from outbox.settings import Settings

    assert serve_metrics(Settings(_env_file=None, database_url=database_url)) is None  # type: ignore[call-arg]
    settings = Settings(_env_file=None, database_url=database_url,  # type: ignore[call-arg]
                        metrics_port=unused_port())
    assert settings.metrics_host == "127.0.0.1"
    server = serve_metrics(settings)
    assert server is not None
    try:
        assert server.address == ("127.0.0.1", settings.metrics_port)
        names = {f.name for f in text_string_to_metric_families(
            _get(f"http://127.0.0.1:{settings.metrics_port}/metrics"))}
        assert {"outbox_messages_sent", "outbox_queue_depth", "outbox_metrics_database_up",
                "outbox_send_latency_seconds"} <= names
    finally:
        server.close()


def _count_gauge_queries(engine: Engine) -> dict[str, int]:
    counts = {"depth": 0, "oldest": 0, "backlog": 0}
    statements = {q.METRICS_QUEUE_DEPTH.strip(): "depth", q.METRICS_OLDEST_DUE.strip(): "oldest",
                  q.METRICS_STATUS_BACKLOG.strip(): "backlog"}

    @event.listens_for(engine, "before_cursor_execute")
    def _count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        name = statements.get(statement.strip())
        if name:
            counts[name] += 1

    return counts


def test_scrapes_within_the_window_read_the_queue_once(database_url: str,
                                                       api_db: Engine) -> None:
    scrapes = 8
    with metrics_server(database_url, cache_seconds=300) as server:
        counts = _count_gauge_queries(server.engine)
        url = "http://{}:{}/metrics".format(*server.address)
        bodies = [_scrape(_get(url)) for _ in range(scrapes)]
    assert counts == {"depth": 1, "oldest": 1, "backlog": 1}
    assert all(b[("outbox_metrics_database_up", ())] == 1.0 for b in bodies)

    # Without a window every scrape reads (the counting sees every read).
    with metrics_server(database_url, cache_seconds=0) as server:
        counts = _count_gauge_queries(server.engine)
        url = "http://{}:{}/metrics".format(*server.address)
        for _ in range(scrapes):
            _get(url)
    assert counts == {"depth": scrapes, "oldest": scrapes, "backlog": scrapes}


@pytest.mark.slow
def test_serve_has_metrics_on_its_own_loopback_listener(api_db: Engine) -> None:
    public, private = unused_port(), unused_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "outbox", "serve", "--port", str(public)], cwd=REPO, text=True,
        env={**os.environ, "OUTBOX_METRICS_PORT": str(private)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        # Both listeners: the metrics one can answer before uvicorn has bound the public one.
        def up() -> bool:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{public}/healthz", timeout=10).close()
                return bool(_get(f"http://127.0.0.1:{private}/metrics"))
            return False

        wait_for(up, timeout=30)
        assert "outbox_queue_depth" in _get(f"http://127.0.0.1:{private}/metrics")
        with pytest.raises(urllib.error.HTTPError) as not_found:
            urllib.request.urlopen(f"http://127.0.0.1:{public}/metrics", timeout=10)
        assert not_found.value.code == 404
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=30)
    assert server.returncode == 0, out


def test_callbacks_and_streams_are_measured(api: httpx.Client, api_key, make_channel,
                                           api_db: Engine, metrics: Any, live_url: str) -> None:
    """Callback outcomes counted (the cron endpoint posts them in this
    process), deliveries waiting and endpoints disabled read from the
    database, open SSE streams from the hub."""
    from sqlalchemy.orm import Session

    from outbox.admin.endpoints import add_endpoint
    from outbox.enqueue import enqueue_text
    from tests.dispatch_helpers import TEST_KEY
    from tests.sim_fixtures import WebhookReceiver

    channel = make_channel()
    receiver = WebhookReceiver()
    try:
        with Session(api_db) as s, s.begin():
            for url in (receiver.url, f"http://127.0.0.1:{unused_port()}/down",
                        receiver.url + "/gone"):
                add_endpoint(s, workspace_id="default", url=url, event_types=["message.queued"],
                             encryption_key=TEST_KEY)
        with api_db.begin() as conn:
            conn.execute(text("UPDATE outbox.webhook_endpoints SET status = 'disabled' "
                              "WHERE url LIKE '%/gone'"))
            conn.execute(text("UPDATE outbox.channels SET status = 'paused'"))  # no sends
        with Session(api_db) as s, s.begin():
            for n in range(2):
                enqueue_text(s, channel_id=channel, to=f"+155501000{n:02d}", body="x")
        before = metrics()
        r = api.post("/v1/cron/dispatch", headers=auth(CRON_SECRET))
        assert r.status_code == 200, r.text
        receiver.wait_for(2)
    finally:
        receiver.close()
    after = metrics()

    def moved(outcome: str) -> float:
        key = ("outbox_callbacks_total", (("outcome", outcome),))
        return after.get(key, 0) - before.get(key, 0)

    assert (moved("delivered"), moved("retried"), moved("failed")) == (2, 2, 0)
    assert after[("outbox_callback_deliveries", (("status", "pending"),))] == 2
    assert after[("outbox_callback_deliveries", (("status", "delivering"),))] == 0
    assert after[("outbox_callback_endpoints_disabled", ())] == 1

    streams = after.get(("outbox_event_streams", ()), 0)
    with httpx.Client(base_url=live_url, timeout=10, trust_env=False) as client, \
            client.stream("GET", "/v1/events/stream", headers=auth(api_key("default", "read"))
                          ) as stream:
        assert stream.status_code == 200
        assert metrics()[("outbox_event_streams", ())] == streams + 1
    wait_for(lambda: metrics()[("outbox_event_streams", ())] == streams, timeout=10)
