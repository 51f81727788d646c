"""Faults the dispatcher must ride out: a channel that keeps failing, a lost
database connection, a batch slower than its lease."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine, text

from tests.dispatch_helpers import (
    channel_tokens,
    enqueue_spread,
    outbox_counts,
    run_dispatcher,
    sent_by_body,
)

pytestmark = pytest.mark.slow  # faults and lost connections


async def test_circuit_breaker_pauses_a_failing_channel_instead_of_burning_attempts(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    down = make_channel(name="down", base_url=sim_url)
    up = make_channel(name="up", phone="+15550000002", base_url=sim_url)
    sim.set_faults(token=channel_tokens(clean_db)[down], error_status=503)
    enqueue_spread(clean_db, [down, up], messages=400, chats=200)

    summary = await run_dispatcher(database_url, circuit_breaker_failures=10,
                                   circuit_breaker_pause_seconds=60, channel_concurrency=4)

    assert summary.sent == 200 and down in summary.paused_channels
    with clean_db.connect() as conn:
        ch = conn.execute(text("SELECT pause_reason, paused_until > now() AS paused "
                               "FROM outbox.channels WHERE id = :id"), {"id": down}).one()
        spent = conn.execute(text("SELECT count(*) FROM outbox.outbox_messages "
                                  "WHERE channel_id = :id AND attempts > 0"),
                             {"id": down}).scalar_one()
    assert ch.paused and "circuit open" in ch.pause_reason
    # Only the failures that tripped the breaker (plus what was already on the
    # wire) spent an attempt; the other ~190 rows kept all of theirs.
    assert 10 <= spent <= 10 + 4
    assert sim.stats().tokens[channel_tokens(clean_db)[down]].rejected[503] == spent


async def test_breaker_off_means_every_row_spends_an_attempt(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    down = make_channel(base_url=sim_url)
    sim.set_faults(error_status=503)
    enqueue_spread(clean_db, [down], messages=60, chats=60)
    summary = await run_dispatcher(database_url, circuit_breaker_failures=0)
    assert summary.retried == 60 and not summary.paused_channels


async def test_lost_database_connections_lose_nothing(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    """Every connection of the dispatcher is terminated mid-run (as a failover
    or an admin would): it reconnects, and every message goes out once."""
    channels = [make_channel(name=f"c{i}", base_url=sim_url) for i in range(2)]
    enqueue_spread(clean_db, channels, messages=1500, chats=300)
    sim.set_faults(latency_ms=20)

    async def kill_connections() -> int:
        # Mid-run by what was sent, not by the clock: a fast machine (or a
        # faster dispatcher) could finish before any fixed delay.
        while (await asyncio.to_thread(sim.stats)).accepted < 300:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        with clean_db.connect() as conn:
            killed = conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
            conn.commit()
        return int(killed)

    killer = asyncio.create_task(kill_connections())
    summary = await run_dispatcher(database_url, batch_size=100)
    killed = await killer
    assert killed >= 1 and summary.sent > 0
    # Rows whose claim or completion died with a connection wait for their
    # lease; a second pass after rescue sends the rest.
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.outbox_messages SET locked_until = now() "
                          "WHERE status = 'sending'"))
    from outbox.db import queries

    with clean_db.begin() as conn:
        conn.execute(text(queries.RESCUE_EXPIRED), {"limit": 10_000})
    await run_dispatcher(database_url)
    by_body = sent_by_body(sim)
    assert len(by_body) == 1500
    assert outbox_counts(clean_db) == {"sent": 1500}
    duplicates = sum(len(v) - 1 for v in by_body.values())
    # A duplicate needs a completion lost after the provider accepted: at most
    # the rows in flight when the connections died.
    assert duplicates <= 256


async def test_heartbeat_keeps_a_slow_batch_from_being_rescued(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    """Sends slower than the lease: the heartbeat extends it, so a rescuer
    running all along finds nothing to rescue and nothing is sent twice."""
    from outbox.db import queries

    channel = make_channel(base_url=sim_url)
    enqueue_spread(clean_db, [channel], messages=20, chats=20)
    sim.set_faults(latency_ms=2500)
    rescued = 0

    async def rescuer() -> None:
        nonlocal rescued
        while True:
            await asyncio.sleep(0.2)
            with clean_db.begin() as conn:
                rescued += conn.execute(text(queries.RESCUE_EXPIRED),
                                        {"limit": 100}).one().requeued

    task = asyncio.create_task(rescuer())
    try:
        summary = await run_dispatcher(database_url, lease_seconds=1.5)
    finally:
        task.cancel()
    assert rescued == 0 and summary.stale == 0 and summary.sent == 20
    assert all(len(v) == 1 for v in sent_by_body(sim).values())


def test_heartbeat_never_waits_for_rows_being_completed(make_channel, clean_db: Engine):
    """The heartbeat and the completion of one worker once locked the same rows
    in different orders and deadlocked (found by scripts/chaos): the heartbeat
    now skips rows locked by a completion in progress."""
    import uuid

    from outbox.db import queries

    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=4, chats=4)
    token = uuid.uuid4()
    with clean_db.begin() as conn:
        conn.execute(text(queries.CLAIM), {"per_channel": 10, "batch_size": 10,
                                           "claim_token": token, "lease_seconds": 60})
    with clean_db.connect() as completing, clean_db.connect() as heartbeat:
        completing.execute(text(
            "UPDATE outbox.outbox_messages SET last_error = 'completing' "
            "WHERE id = (SELECT min(id) "
            "FROM outbox.outbox_messages)"))  # row lock held, uncommitted
        heartbeat.execute(text("SET lock_timeout = '1s'"))  # waiting would raise here
        extended = heartbeat.execute(text(queries.EXTEND_LEASE), {
            "claim_tokens": [token], "lease_seconds": 60}).rowcount
        heartbeat.commit()
        completing.rollback()
    assert extended == 3
