"""The completer and the dispatcher's store on their own, against a real database:
refused rows set aside, an outage waited out, pauses atomic with their batch."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.db.direct import StatementRefused
from outbox.db.dispatch_store import CircuitPause, ClaimedRow, Completion, DispatchStore
from outbox.dispatch.backoff import OutageBackoff
from outbox.dispatch.completer import Completer
from outbox.dispatch.config import DispatcherConfig
from outbox.dispatch.credentials import CredentialCache
from outbox.dispatch.outage import DatabaseOutage
from outbox.dispatch.outcomes import Decision, Kind
from outbox.dispatch.progress import due_count
from outbox.dispatch.summary import Summary
from tests.dispatch_helpers import TEST_KEY, enqueue_spread, outbox_counts

APP = "outbox-test-completer"
# An interval PostgreSQL can't hold: COMPLETE refuses the row that asks for it.
UNREPRESENTABLE_SECONDS = 1e300


@pytest.fixture
async def store(async_engine: AsyncEngine) -> AsyncIterator[DispatchStore]:
    s = DispatchStore.to(async_engine, application_name=APP)
    yield s
    await s.aclose()


async def claimed(store: DispatchStore, async_engine: AsyncEngine,
                  **config: object) -> tuple[Completer, list[ClaimedRow]]:
    """A completer (quick to retry), with every due row claimed and handed to it."""
    creds = CredentialCache(async_engine, default_base_url="http://127.0.0.1:9", keys=[TEST_KEY])
    outage = DatabaseOutage(OutageBackoff(base_seconds=0.05, rng=random.Random(1)))
    c = Completer(store, creds, DispatcherConfig(**config), Summary(),  # type: ignore[arg-type]
                  outage)
    rows = await store.claim(batch_size=100, per_channel=100, lease_seconds=60)
    c.claimed(rows)
    return c, rows


def sent(row: ClaimedRow) -> Decision:
    return Decision("sent", Kind.SENT, wa_message_id=f"wa-{row.id}")


def _statuses(engine: Engine) -> dict[int, tuple[str, uuid.UUID | None]]:
    with engine.connect() as conn:
        return {r.id: (r.status, r.claim_token) for r in conn.execute(text(
            "SELECT id, status, claim_token FROM outbox.outbox_messages"))}


async def test_a_refused_row_is_set_aside_and_the_rest_of_its_batch_recorded(
        make_channel, clean_db: Engine, async_engine: AsyncEngine, store: DispatchStore) -> None:
    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=7, chats=7)
    c, rows = await claimed(store, async_engine, circuit_breaker_failures=5)
    bad = rows[3]
    for row in rows:
        c.record(row, Decision("queued", Kind.RETRIED, delay_seconds=UNREPRESENTABLE_SECONDS)
                 if row is bad else sent(row))
    c.breaker_tripped(channel)  # to be written with this batch, whichever half holds it

    await c.flush_all()

    statuses = _statuses(clean_db)
    assert statuses.pop(bad.id) == ("sending", bad.claim_token)  # left to the rescuer
    assert set(statuses.values()) == {("sent", None)} and len(statuses) == 6
    summary = c.summary
    assert (summary.sent, summary.retried, summary.stale) == (6, 0, 0)
    assert c.outstanding == 0 and c.claim_tokens() == []
    with clean_db.connect() as conn:
        reason = conn.execute(text("SELECT pause_reason FROM outbox.channels")).scalar_one()
    assert reason == "circuit open: 5 consecutive transient failures"
    assert summary.paused_channels == {channel}


async def test_a_lost_connection_is_waited_out_and_the_batch_recorded(
        make_channel, clean_db: Engine, async_engine: AsyncEngine, store: DispatchStore) -> None:
    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=5, chats=5)
    c, rows = await claimed(store, async_engine)
    for row in rows:
        c.record(row, sent(row))
    with clean_db.connect() as conn:
        killed = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = :app AND datname = current_database()"),
            {"app": APP}).scalar_one()
        conn.commit()
    assert killed >= 1

    await c.flush_all()

    assert outbox_counts(clean_db) == {"sent": 5}
    assert c.summary.sent == 5 and c.outstanding == 0 and c.flushes == 1


async def test_a_refused_pause_takes_its_batch_back_with_it(
        make_channel, clean_db: Engine, store: DispatchStore) -> None:
    """Rows and pauses are one transaction: neither is half-written."""
    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=3, chats=3)
    rows = await store.claim(batch_size=10, per_channel=10, lease_seconds=60)
    done = [Completion(r.id, r.claim_token, "sent", False, 0.0, None, f"wa-{r.id}")
            for r in rows]

    with pytest.raises(StatementRefused):
        await store.complete(done, circuit=[
            CircuitPause(channel, UNREPRESENTABLE_SECONDS, "circuit open")])
    assert outbox_counts(clean_db) == {"sending": 3}
    with clean_db.connect() as conn:
        assert conn.execute(text(
            "SELECT paused_until FROM outbox.channels")).scalar_one() is None

    recorded = await store.complete(done, circuit=[CircuitPause(channel, 30.0, "circuit open")])
    assert recorded.rows == 3 and outbox_counts(clean_db) == {"sent": 3}
    again = await store.complete(done)  # already recorded: nothing is ours any more
    assert again.rows == 0


async def test_the_heartbeat_extends_only_its_own_claims(
        make_channel, clean_db: Engine, store: DispatchStore) -> None:
    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=4, chats=4)
    assert await store.channels_with_queued(limit=10) == [channel]
    mine = await store.claim(batch_size=2, per_channel=2, lease_seconds=5)
    theirs = await store.claim(batch_size=2, per_channel=2, lease_seconds=5)
    assert len(mine) == len(theirs) == 2 and await store.channels_with_queued(limit=10) == []

    await store.extend_leases([mine[0].claim_token], lease_seconds=600)

    with clean_db.connect() as conn:
        left = dict(conn.execute(text(
            "SELECT claim_token, max(EXTRACT(EPOCH FROM locked_until - now()))::float8 "
            "FROM outbox.outbox_messages GROUP BY claim_token")).all())
    assert 590 < left[mine[0].claim_token] <= 600
    assert left[theirs[0].claim_token] <= 5


async def test_the_progress_bar_total_is_the_rows_due_now(
        make_channel, clean_db: Engine, async_engine: AsyncEngine) -> None:
    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=5, chats=5)
    with clean_db.begin() as conn:
        conn.execute(text(
            "UPDATE outbox.outbox_messages SET next_attempt_at = now() + interval '1 hour' "
            "WHERE id = (SELECT min(id) FROM outbox.outbox_messages)"))

    assert await due_count(async_engine) == 4
