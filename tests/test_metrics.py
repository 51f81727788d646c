"""GET /metrics (Prometheus text) moves as messages flow: enqueued over the
API, queue depth and oldest due age from the database, sent and latency
from a dispatch (the cron endpoint), webhook counters; and the daemon's
own metrics server."""

from __future__ import annotations

import json
import urllib.request

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text

from outbox.webhooks.apply import SECRET_HEADER
from tests.api_fixtures import CRON_SECRET, auth, webhook_secret


def _scrape(text_body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text_body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _metrics(api: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = api.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    return _scrape(r.text)


def test_metrics_move_as_messages_flow(api: httpx.Client, api_key, make_channel, sim,
                                       sim_url: str, api_db: Engine) -> None:
    key = api_key()
    ch = make_channel(base_url=sim_url)
    c = (("channel", str(ch)),)
    before = _metrics(api)
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
    queued = _metrics(api)
    assert queued[("outbox_messages_enqueued_total", c)] - before.get(
        ("outbox_messages_enqueued_total", c), 0) == 4
    assert queued[("outbox_queue_depth", (*c, ("status", "queued")))] == 4
    assert queued[("outbox_oldest_due_seconds", c)] >= 59

    latency_before = before.get(("outbox_send_latency_seconds_count", (("outcome", "sent"),)), 0)
    r = api.post("/v1/cron/dispatch", headers=auth(CRON_SECRET))
    assert r.json()["sent"] == 4
    sent = _metrics(api)
    assert sent[("outbox_messages_sent_total", c)] == 4
    assert ("outbox_queue_depth", (*c, ("status", "queued"))) not in sent
    assert ("outbox_oldest_due_seconds", c) not in sent
    assert sent[("outbox_send_latency_seconds_count", (("outcome", "sent"),))] - latency_before == 4

    # a webhook for a message we don't know yet: the backlog gauge and the counter
    applied_before = sent.get(("outbox_webhook_statuses_total", (("result", "backlogged"),)), 0)
    hook = api.post(f"/webhooks/whapi/{ch}", headers={SECRET_HEADER: webhook_secret(api_db, ch)},
                    content=json.dumps({"statuses": [{"id": "nobody", "status": "read"}]}))
    assert hook.status_code == 200
    after = _metrics(api)
    assert after[("outbox_webhook_status_backlog", ())] == 1
    assert after[("outbox_webhook_statuses_total", (("result", "backlogged"),))] \
        - applied_before == 1


def test_failures_and_rate_limits_are_counted(api: httpx.Client, api_key, make_channel, sim,
                                              sim_url: str, api_db: Engine) -> None:
    key = api_key()
    ch = make_channel(base_url=sim_url)
    c = (("channel", str(ch)),)
    sim.set_faults(error_status=400)
    api.post("/v1/messages", headers=auth(key),
             json={"channel_id": str(ch), "to": "+15550100001", "text": "x"})
    api.post("/v1/cron/dispatch", headers=auth(CRON_SECRET))
    m = _metrics(api)
    assert m[("outbox_messages_failed_total", c)] == 1
    assert m[("outbox_queue_depth", (*c, ("status", "failed")))] == 1

    sim.set_faults(error_status=429, retry_after=120)
    api.post("/v1/messages", headers=auth(key),
             json={"channel_id": str(ch), "to": "+15550100002", "text": "y"})
    api.post("/v1/cron/dispatch", headers=auth(CRON_SECRET))
    m = _metrics(api)
    assert m[("outbox_rate_limited_total", c)] == 1
    assert m[("outbox_queue_depth", (*c, ("status", "queued")))] == 1


def test_daemon_metrics_server(database_url: str, api_db: Engine) -> None:
    import socket

    from outbox.metrics import start_metrics_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server, thread = start_metrics_server(port, database_url=database_url, addr="127.0.0.1")
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        names = {f.name for f in text_string_to_metric_families(body.decode())}
        assert {"outbox_messages_sent", "outbox_queue_depth", "outbox_metrics_database_up",
                "outbox_send_latency_seconds"} <= names
    finally:
        server.shutdown()
        thread.join(timeout=5)
