"""End to end over real sockets: enqueue over HTTP → row in PostgreSQL →
the dispatcher sends to the simulator → GET shows `sent` → the simulator's
status webhooks come back to the app → `delivered` → `read`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from outbox.webhooks.apply import SECRET_HEADER
from tests.api_fixtures import auth, wait_for, webhook_secret
from tests.dispatch_helpers import run_dispatcher


def _configure_sim_webhooks(sim_url: str, *, token: str | None, url: str, secret: str,
                            delays_ms: dict[str, float]) -> dict[str, Any]:
    with httpx.Client(base_url=sim_url, trust_env=False) as c:
        r = c.post("/_sim/webhooks", json={"token": token, "url": url,
                                           "headers": {SECRET_HEADER: secret},
                                           "delays_ms": delays_ms})
        r.raise_for_status()
        return dict(r.json())


def _sim_webhook_stats(sim_url: str) -> dict[str, Any]:
    with httpx.Client(base_url=sim_url, trust_env=False) as c:
        return dict(c.get("/_sim/webhooks").json()["stats"])


@pytest.mark.slow
def test_enqueue_send_delivered_read_over_http(
        api: httpx.Client, live_url: str, api_key, make_channel, sim, sim_url: str,
        database_url: str, api_db: Engine) -> None:
    key = api_key()
    ch = make_channel(base_url=sim_url)
    _configure_sim_webhooks(sim_url, token=None, url=f"{live_url}/webhooks/whapi/{ch}",
                            secret=webhook_secret(api_db, ch),
                            # `sent` at once: it may well beat the dispatcher's
                            # record of the id (the backlog handles that).
                            delays_ms={"sent": 0, "delivered": 2000, "read": 3500})

    r = api.post("/v1/messages", headers=auth(key),
                 json={"channel_id": str(ch), "to": "+15550100001", "text": "order shipped"})
    assert r.status_code == 201, r.text
    mid = r.json()["message_id"]
    with api_db.connect() as conn:
        assert conn.execute(text("SELECT status FROM outbox.outbox_messages WHERE message_id = :m"),
                            {"m": mid}).scalar_one() == "queued"

    started = time.monotonic()
    summary = asyncio.run(run_dispatcher(database_url))
    assert summary.sent == 1

    def status() -> dict[str, Any]:
        return dict(api.get(f"/v1/messages/{mid}", headers=auth(key)).json())

    first = status()
    if time.monotonic() - started < 1.8:  # `delivered` is due 2 s after the send
        assert first["status"] == "sent"
    else:  # a very slow machine: the webhooks may have overtaken this GET
        assert first["status"] in ("sent", "delivered", "read")
    assert first["outbox_status"] == "sent" and first["attempts"] == 1
    wa_id = first["wa_message_id"]
    assert wa_id == sim.sent()[0].id

    delivered = wait_for(lambda: (s := status())["status"] in ("delivered", "read") and s,
                         timeout=15)
    assert delivered["delivered_at"] is not None
    final = wait_for(lambda: (s := status())["status"] == "read" and s, timeout=15)
    assert final["read_at"] is not None and final["delivered_at"] <= final["read_at"]
    assert final["wa_message_id"] == wa_id

    stats = wait_for(lambda: (s := _sim_webhook_stats(sim_url))["posted"] == 3 and s)
    assert stats["failed"] == 0 and stats["dropped"] == 0


def test_simulator_webhook_with_wrong_secret_is_refused(
        api: httpx.Client, live_url: str, api_key, make_channel, sim, sim_url: str,
        database_url: str, api_db: Engine) -> None:
    key = api_key()
    ch = make_channel(base_url=sim_url)
    _configure_sim_webhooks(sim_url, token=None, url=f"{live_url}/webhooks/whapi/{ch}",
                            secret="not-the-secret", delays_ms={"sent": 0, "delivered": 0})
    r = api.post("/v1/messages", headers=auth(key),
                 json={"channel_id": str(ch), "to": "+15550100001", "text": "hi"})
    mid = r.json()["message_id"]
    assert asyncio.run(run_dispatcher(database_url)).sent == 1
    stats = wait_for(lambda: (s := _sim_webhook_stats(sim_url))["failed"] == 2 and s)
    # Retried until a 200 (like Whapi), so there may be more attempts by now.
    assert set(stats["statuses"]) == {"401"} and stats["statuses"]["401"] >= 2
    assert stats["posted"] == 0
    assert api.get(f"/v1/messages/{mid}", headers=auth(key)).json()["status"] == "sent"
