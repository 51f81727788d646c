# ruff: noqa: F811  (the aengine fixture imported from tests.test_callbacks)
"""Upkeep of events and status callbacks: finished deliveries pruned in
batches, a disabled endpoint's waiting ones dead-lettered after 3 days,
events not pruned before the fan-out reached them, and a cron pass
(no daemon) doing all of it. Rows are back-dated, no sleeps."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from outbox.admin.endpoints import add_endpoint
from outbox.enqueue import enqueue_text
from outbox.events.callbacks import CallbackSender
from outbox.maintenance.delivery_pruner import DeliveryPruner, DeliveryPruneResult
from outbox.maintenance.event_pruner import EventPruner
from tests.dispatch_helpers import TEST_KEY, cli
from tests.sim_fixtures import WebhookReceiver
from tests.test_callbacks import aengine  # noqa: F401  (the fixture: fan-out from the start)

WEEK = 7 * 86400.0


def _endpoint(engine: Engine, url: str) -> uuid.UUID:
    with Session(engine) as s, s.begin():
        return add_endpoint(s, workspace_id="default", url=url,
                            encryption_key=TEST_KEY).endpoint.id


def _send(engine: Engine, channel: uuid.UUID, n: int) -> None:
    with Session(engine) as s, s.begin():
        for i in range(n):
            enqueue_text(s, channel_id=channel, to=f"+1555010{i:04d}", body="x")


async def _pass(aengine: AsyncEngine) -> Any:
    sender = CallbackSender(keys=[TEST_KEY])
    try:
        return await sender.run_once(aengine)
    finally:
        await sender.aclose()


def _sql(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.begin() as conn:
        result = conn.execute(text(sql), params)
        return list(result) if result.returns_rows else []


def _deliveries(engine: Engine) -> dict[int, tuple[str, str | None]]:
    return {r.id: (r.status, r.last_error) for r in _sql(
        engine, "SELECT id, status, last_error FROM outbox.webhook_deliveries")}


async def test_delivery_pruner(aengine: AsyncEngine, clean_db: Engine, make_channel,
                               receiver: WebhookReceiver) -> None:
    channel = make_channel()
    live = _endpoint(clean_db, receiver.url)
    _send(clean_db, channel, 6)
    assert (await _pass(aengine)).delivered == 6
    ids = sorted(_deliveries(clean_db))
    # Eight days old: delivered (0, 1, 2), dead-lettered (3), a retry still
    # waiting (4); 5 is young.
    _sql(clean_db, "UPDATE outbox.webhook_deliveries SET created_at = now() - interval "
                   "'8 days' WHERE id = ANY(:ids)", ids=ids[:5])
    _sql(clean_db, "UPDATE outbox.webhook_deliveries SET status = 'failed' WHERE id = :i",
         i=ids[3])
    _sql(clean_db, "UPDATE outbox.webhook_deliveries SET status = 'pending', "
                   "next_attempt_at = now() + interval '1 hour' WHERE id = :i", i=ids[4])
    # A disabled endpoint's waiting deliveries: one 3 days and a minute old
    # (too old to send), one a day old (re-enabling would send it).
    off = _endpoint(clean_db, receiver.url + "/off")
    _sql(clean_db, """
        INSERT INTO outbox.webhook_deliveries (endpoint_id, event_id, event_type, body, status,
                                               created_at, locked_until)
        VALUES (:e, 1, 'message.queued', '{}', 'pending', now() - interval '3 days 1 minute',
                NULL),
               (:e, 2, 'message.queued', '{}', 'delivering', now() - interval '3 days 1 minute',
                now() - interval '1 minute'),
               (:e, 3, 'message.queued', '{}', 'pending', now() - interval '1 day', NULL)
        """, e=off)
    _sql(clean_db, "UPDATE outbox.webhook_endpoints SET status = 'disabled', "
                   "disabled_reason = 'the receiver answered 410 Gone' WHERE id = :e", e=off)
    old_off = sorted(set(_deliveries(clean_db)) - set(ids))

    pruner = DeliveryPruner(older_than_seconds=WEEK, batch=2, max_batches=1)
    assert await pruner.run_once(aengine) == DeliveryPruneResult(deleted=2, given_up=2)
    after = _deliveries(clean_db)
    assert ids[0] not in after and ids[1] not in after
    assert [after[i] for i in old_off] == [
        ("failed", "not sent: its endpoint stayed disabled"),
        ("failed", "not sent: its endpoint stayed disabled"), ("pending", None)]
    # The next run goes on where the bounded one stopped.
    assert await DeliveryPruner(older_than_seconds=WEEK, batch=2).run_once(aengine) == (
        DeliveryPruneResult(deleted=2, given_up=0))
    after = _deliveries(clean_db)
    assert sorted(after) == [ids[4], ids[5], *old_off]
    assert after[ids[4]][0] == "pending" and after[ids[5]][0] == "delivered"
    assert await pruner.run_once(aengine) == DeliveryPruneResult(0, 0)
    assert live != off


async def test_events_wait_for_the_fan_out(aengine: AsyncEngine, clean_db: Engine,
                                           make_channel, receiver: WebhookReceiver) -> None:
    """An old event an active endpoint hasn't been given yet is kept until
    the fan-out has made its delivery; with no endpoint active, nothing waits."""
    channel = make_channel()
    endpoint = _endpoint(clean_db, receiver.url)
    _send(clean_db, channel, 3)
    _sql(clean_db, "UPDATE outbox.events SET occurred_at = now() - interval '8 days'")
    pruner = EventPruner(older_than_seconds=WEEK)
    assert await pruner.run_once(aengine) == 0  # the fan-out's cursor is behind them
    assert (await _pass(aengine)).delivered == 3
    assert await pruner.run_once(aengine) == 3
    assert len(receiver.requests) == 3

    _sql(clean_db, "UPDATE outbox.webhook_endpoints SET status = 'disabled' WHERE id = :e",
         e=endpoint)
    _sql(clean_db, "UPDATE outbox.webhook_fanout SET last_event_id = 0")
    _send(clean_db, channel, 2)
    _sql(clean_db, "UPDATE outbox.events SET occurred_at = now() - interval '8 days'")
    assert await pruner.run_once(aengine) == 2


def test_a_cron_pass_prunes_events_and_deliveries(clean_db: Engine, make_channel,
                                                 receiver: WebhookReceiver) -> None:
    """Without `outbox run`, `dispatch --once` is the only upkeep there is."""
    channel = make_channel()
    _endpoint(clean_db, receiver.url)
    _send(clean_db, channel, 2)
    _sql(clean_db, "UPDATE outbox.webhook_fanout SET last_event_id = 0")
    _sql(clean_db, "UPDATE outbox.channels SET status = 'paused'")  # nothing is sent
    first = cli("dispatch", "--once", "--no-progress")
    assert first.returncode == 0, first.stderr
    receiver.wait_for(2)
    assert {s for s, _ in _deliveries(clean_db).values()} == {"delivered"}
    _sql(clean_db, "UPDATE outbox.events SET occurred_at = now() - interval '8 days'")
    _sql(clean_db, "UPDATE outbox.webhook_deliveries SET created_at = now() - interval '8 days'")
    second = cli("dispatch", "--once", "--no-progress")
    assert second.returncode == 0, second.stderr
    assert _sql(clean_db, "SELECT count(*) FROM outbox.events")[0][0] == 0
    assert _deliveries(clean_db) == {}
