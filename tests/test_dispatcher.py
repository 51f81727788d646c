"""The dispatcher end to end: real PostgreSQL, the simulator over loopback."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest
from sqlalchemy import Engine, text

from tests.dispatch_helpers import (
    channel_tokens,
    enqueue_spread,
    order_violations,
    outbox_counts,
    run_dispatcher,
    sent_by_body,
)


async def test_every_message_sent_once_in_chat_order(make_channel, clean_db: Engine,
                                                     database_url: str, sim, sim_url):
    channels = [make_channel(name=f"c{i}", base_url=sim_url) for i in range(4)]
    plan = enqueue_spread(clean_db, channels, messages=600, chats=30)
    # Some latency so many sends overlap and the pipeline really interleaves.
    sim.set_faults(latency_ms=5, latency_jitter_ms=5)

    summary = await run_dispatcher(database_url, batch_size=50, per_channel_claim=20)

    assert summary.sent == 600 and summary.failed == 0 and summary.retried == 0
    records = sim.sent()
    by_body = sent_by_body(sim)
    assert len(records) == 600
    assert all(len(v) == 1 for v in by_body.values()), "a message was sent twice"
    tokens = channel_tokens(clean_db)
    for channel_id, to, body in plan:
        (rec,) = by_body[body]
        assert rec.to == to and rec.token == tokens[channel_id] and rec.type == "text"
    assert order_violations(records) == 0
    assert outbox_counts(clean_db) == {"sent": 600}
    with clean_db.connect() as conn:
        rows = conn.execute(text(
            "SELECT m.body, m.status, m.wa_message_id, m.sent_at IS NOT NULL AS has_sent_at "
            "FROM outbox.messages m")).all()
        chats = conn.execute(text(
            "SELECT count(*) FROM outbox.chats WHERE last_message_at IS NOT NULL "
            "AND last_message_preview LIKE 'm%'")).scalar_one()
    assert all(r.status == "sent" and r.has_sent_at for r in rows)
    assert {r.body: r.wa_message_id for r in rows} == {b: v[0].id for b, v in by_body.items()}
    assert chats == 30 * 4 or chats == len({(c, t) for c, t, _ in plan})


async def test_fair_across_channels(make_channel, clean_db: Engine, database_url: str,
                                    sim, sim_url):
    """A channel with a big backlog doesn't starve a small one: the small
    channel's messages go out in the first claims, not after the backlog."""
    big = make_channel(name="big", base_url=sim_url)
    small = make_channel(name="small", phone="+15550000002", base_url=sim_url)
    enqueue_spread(clean_db, [big], messages=1000, chats=500)
    enqueue_spread(clean_db, [small], messages=10, chats=10)
    await run_dispatcher(database_url, batch_size=40, per_channel_claim=20, concurrency=40)
    records = sorted(sim.sent(), key=lambda r: r.seq)
    small_token = channel_tokens(clean_db)[small]
    positions = [i for i, r in enumerate(records) if r.token == small_token]
    assert len(positions) == 10 and max(positions) < 100


@pytest.mark.slow
async def test_transient_errors_follow_backoff_then_dead_letter(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    channel = make_channel(base_url=sim_url)
    enqueue_spread(clean_db, [channel], messages=3, chats=3)
    sim.set_faults(error_status=503)
    expected = [60, 120, 240, 480]
    for attempt in range(1, 6):
        summary = await run_dispatcher(database_url)
        with clean_db.connect() as conn:
            rows = conn.execute(text(
                "SELECT status, attempts, last_error, "
                "EXTRACT(EPOCH FROM next_attempt_at - updated_at)::float8 AS wait "
                "FROM outbox.outbox_messages")).all()
        assert all(r.attempts == attempt for r in rows)
        if attempt < 5:
            assert summary.retried == 3 and summary.failed == 0
            for r in rows:
                assert r.status == "queued" and "503" in r.last_error
                assert expected[attempt - 1] * 0.9 <= r.wait <= expected[attempt - 1] * 1.1
            # Not due yet: a dispatcher now sends nothing.
            again = await run_dispatcher(database_url)
            assert again.claimed == 0
            with clean_db.begin() as conn:  # time travel: the retry is due
                conn.execute(text("UPDATE outbox.outbox_messages SET next_attempt_at = now()"))
        else:
            assert summary.failed == 3
            assert all(r.status == "failed" and "gave up after 5 attempts" in r.last_error
                       for r in rows)
    assert sim.stats().accepted == 0 and sim.stats().rejected_total == 15
    with clean_db.connect() as conn:
        assert conn.execute(
            text("SELECT DISTINCT status FROM outbox.messages")).scalars().all() == ["failed"]

    # Dead letters show in status; retry requeues them with fresh attempts.
    from sqlalchemy.orm import Session

    from outbox.admin.status import queue_status, retry_failed

    with Session(clean_db) as s:
        status = queue_status(s)
        assert status.totals()["failed"] == 3 and len(status.dead_letters) == 3
        assert "gave up after 5 attempts" in status.dead_letters[0]["error"]
        assert retry_failed(s, channel_id=channel) == 3
        s.commit()
    sim.clear_faults()
    assert (await run_dispatcher(database_url)).sent == 3
    with clean_db.connect() as conn:
        assert conn.execute(
            text("SELECT DISTINCT status FROM outbox.messages")).scalars().all() == ["sent"]


async def test_timeout_is_transient_and_counted_ambiguous(make_channel, clean_db: Engine,
                                                          database_url: str, sim, sim_url):
    channel = make_channel(base_url=sim_url)
    enqueue_spread(clean_db, [channel], messages=2, chats=2)
    sim.set_faults(hang=True)
    summary = await run_dispatcher(database_url, http_timeout=0.5)
    assert summary.retried == 2 and summary.ambiguous == 2
    assert outbox_counts(clean_db) == {"queued": 2}


@pytest.mark.slow
@pytest.mark.parametrize("retry_after", [None, 3])
async def test_rate_limit_pauses_channel_without_spending_attempts(
        retry_after, make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    limited = make_channel(name="limited", base_url=sim_url)
    other = make_channel(name="other", phone="+15550000002", base_url=sim_url)
    tokens = channel_tokens(clean_db)
    enqueue_spread(clean_db, [limited, other], messages=40, chats=10)
    sim.set_faults(token=tokens[limited], error_status=429, retry_after=retry_after)

    summary = await run_dispatcher(database_url, rate_limit_pause_seconds=4)

    assert summary.sent == 20 and limited in summary.paused_channels
    stats = sim.stats()
    # Only the first concurrent wave reached the limited channel, then it paused.
    assert 1 <= stats.tokens[tokens[limited]].rejected.get(429, 0) <= 20
    with clean_db.connect() as conn:
        ch = conn.execute(text(
            "SELECT paused_until, pause_reason, rate_limit_strikes, "
            "EXTRACT(EPOCH FROM paused_until - now())::float8 AS left "
            "FROM outbox.channels WHERE id = :id"),
            {"id": limited}).one()
        rows = conn.execute(text(
            "SELECT status, attempts FROM outbox.outbox_messages WHERE channel_id = :id"),
            {"id": limited}).all()
    assert "429" in ch.pause_reason and ch.rate_limit_strikes == 1
    assert 0 < ch.left <= (retry_after or 4)
    assert all(r.status == "queued" and r.attempts == 0 for r in rows), "attempt was spent"

    # While paused, nothing reaches the channel.
    sim.clear_faults()
    during = await run_dispatcher(database_url)
    assert during.claimed == 0
    assert sim.stats().tokens[tokens[limited]].accepted == 0

    # After the pause (moved into the past rather than waited out), the rows
    # go out and the strikes reset.
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.channels SET paused_until = now() - interval '1 second' "
                          "WHERE id = :id"), {"id": limited})
    pause_end = time.time()
    after = await run_dispatcher(database_url)
    assert after.sent == 20
    limited_records = [r for r in sim.sent() if r.token == tokens[limited]]
    assert len(limited_records) == 20
    assert min(r.received_at for r in limited_records) >= pause_end - 0.05
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT rate_limit_strikes FROM outbox.channels WHERE id = :id"),
                            {"id": limited}).scalar_one() == 0


async def test_rate_limit_pause_escalates_without_retry_after(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    channel = make_channel(base_url=sim_url)
    token = channel_tokens(clean_db)[channel]
    enqueue_spread(clean_db, [channel], messages=1, chats=1)
    sim.set_faults(token=token, error_status=429)
    pauses = []
    for _ in range(3):
        await run_dispatcher(database_url, rate_limit_pause_seconds=10)
        with clean_db.begin() as conn:
            pauses.append(conn.execute(text(
                "SELECT EXTRACT(EPOCH FROM paused_until - now())::float8 FROM outbox.channels")
            ).scalar_one())
            conn.execute(text("UPDATE outbox.channels SET paused_until = now()"))
    assert 8 < pauses[0] <= 10 and 18 < pauses[1] <= 20 and 38 < pauses[2] <= 40


@pytest.mark.slow
@pytest.mark.parametrize(("status", "cause"), [
    (401, "unauthorized"), (402, "trial_limit"), (404, "not_found")])
async def test_channel_problems_pause_and_keep_rows(
        status, cause, make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    bad = make_channel(name="bad", base_url=sim_url)
    good = make_channel(name="good", phone="+15550000002", base_url=sim_url)
    sim.set_faults(token=channel_tokens(clean_db)[bad], error_status=status)
    enqueue_spread(clean_db, [bad, good], messages=20, chats=5)
    summary = await run_dispatcher(database_url)
    assert summary.sent == 10 and bad in summary.paused_channels
    with clean_db.connect() as conn:
        ch = conn.execute(text("SELECT status, pause_reason, pause_cause FROM outbox.channels "
                               "WHERE id = :id"), {"id": bad}).one()
        rows = conn.execute(text("SELECT status, attempts FROM outbox.outbox_messages "
                                 "WHERE channel_id = :id"), {"id": bad}).all()
    # Never disabled on a guess: paused, with the cause a resume can act on.
    assert (ch.status, ch.pause_cause) == ("paused", cause) and str(status) in ch.pause_reason
    assert len(rows) == 10 and all(r.status == "queued" and r.attempts == 0 for r in rows)
    # The channel stays out of claims until an operator resumes it.
    assert (await run_dispatcher(database_url)).claimed == 0


async def test_permanent_errors_fail_that_message_only(make_channel, clean_db: Engine,
                                                       database_url: str, sim, sim_url):
    channel = make_channel(base_url=sim_url)
    plan = enqueue_spread(clean_db, [channel], messages=12, chats=4)
    forbidden_to = plan[0][1]
    sim.set_faults(to=forbidden_to, error_status=403)
    summary = await run_dispatcher(database_url)
    assert summary.failed == 3 and summary.sent == 9
    with clean_db.connect() as conn:
        failed = conn.execute(text(
            "SELECT m.error, o.attempts FROM outbox.messages m JOIN outbox.outbox_messages o "
            "ON o.message_id = m.id WHERE m.status = 'failed'")).all()
    assert len(failed) == 3 and all("403" in f.error and f.attempts == 1 for f in failed)


async def test_lease_guard_late_completion_loses_to_rescue(make_channel, clean_db: Engine,
                                                           database_url: str):
    """A completion whose row was rescued (token changed) changes nothing."""
    import uuid

    from outbox.db import queries

    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=1, chats=1)
    old, new = uuid.uuid4(), uuid.uuid4()
    # Each step in its own transaction: now() is fixed within one.
    with clean_db.begin() as conn:
        ids = conn.execute(text(queries.CLAIM), {
            "per_channel": 1, "batch_size": 1, "claim_token": old,
            "lease_seconds": 60}).scalars().all()
        # Its request went out (it completes as sent): the attempt stays spent.
        conn.execute(text(queries.MARK_SENDS_STARTED), {"ids": ids, "claim_tokens": [old]})
        # The lease runs out (moved into the past rather than waited out).
        conn.execute(text("UPDATE outbox.outbox_messages "
                          "SET locked_until = now() - interval '1 second'"))
    with clean_db.begin() as conn:
        assert conn.execute(text(queries.RESCUE_EXPIRED), {"limit": 10}).one().requeued == 1
    with clean_db.begin() as conn:
        conn.execute(text(queries.CLAIM), {"per_channel": 1, "batch_size": 1,
                                           "claim_token": new, "lease_seconds": 60})
    with clean_db.begin() as conn:
        row_id = conn.execute(text("SELECT id FROM outbox.outbox_messages")).scalar_one()
        late = conn.execute(text(queries.COMPLETE), {
            "ids": [row_id], "claim_tokens": [old], "statuses": ["sent"], "refunds": [0],
            "delays": [0.0], "errors": [None], "wa_message_ids": ["late"]}).one()
        assert late.completed == 0
        row = conn.execute(text("SELECT status, claim_token, attempts FROM outbox.outbox_messages")
                           ).one()
    assert row.status == "sending" and row.claim_token == new and row.attempts == 2


async def test_scheduled_message_waits_and_does_not_block_its_chat(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    from datetime import UTC, datetime

    from sqlalchemy.orm import Session

    from outbox import enqueue_text

    channel = make_channel(base_url=sim_url)
    with Session(clean_db) as s, s.begin():
        enqueue_text(s, channel_id=channel, to="+15550100001", body="later",
                     send_at=datetime.now(UTC) + timedelta(hours=1))
        enqueue_text(s, channel_id=channel, to="+15550100001", body="now")
    summary = await run_dispatcher(database_url)
    assert summary.sent == 1 and [r.body for r in sim.sent()] == ["now"]


async def test_absurd_retry_after_is_capped_at_a_day(make_channel, clean_db: Engine,
                                                     database_url: str, sim, sim_url):
    """Retry-After: 10000000000000 once overflowed PostgreSQL's interval and
    stalled every completion; now the pause is capped and the rows are safe."""
    channel = make_channel(base_url=sim_url)
    sim.set_faults(token=channel_tokens(clean_db)[channel], error_status=429,
                   retry_after="10000000000000")  # raw header: beyond the knob's range
    enqueue_spread(clean_db, [channel], messages=5, chats=5)
    summary = await run_dispatcher(database_url, max_seconds=30)
    assert channel in summary.paused_channels and summary.stale == 0
    with clean_db.connect() as conn:
        left = conn.execute(text(
            "SELECT EXTRACT(EPOCH FROM paused_until - now())::float8 FROM outbox.channels")
        ).scalar_one()
        rows = conn.execute(text("SELECT status, attempts FROM outbox.outbox_messages")).all()
    assert 86000 < left <= 86400
    assert all(r.status == "queued" and r.attempts == 0 for r in rows)


async def test_tokens_of_channels_with_queued_rows_are_decrypted_before_the_first_claim(
        make_channel, clean_db: Engine, database_url: str, sim_url):
    """One claim of one row still warms every channel with queued rows, and
    only those: not an idle channel, not a disabled one."""
    from outbox.database import make_async_engine
    from outbox.dispatch.credentials import CredentialCache
    from outbox.dispatch.dispatcher import Dispatcher, DispatcherConfig
    from outbox.providers.whapi import WhapiClient
    from tests.dispatch_helpers import TEST_KEY

    busy = [make_channel(name=f"b{i}", phone=f"+1555000001{i}", base_url=sim_url)
            for i in range(3)]
    idle = make_channel(name="idle", phone="+15550000020", base_url=sim_url)
    disabled = make_channel(name="off", phone="+15550000021", base_url=sim_url)
    enqueue_spread(clean_db, [*busy, disabled], messages=8, chats=2)
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.channels SET status = 'disabled' WHERE id = :id"),
                     {"id": disabled})

    engine = make_async_engine(database_url, pool_size=2)
    client = WhapiClient(timeout=5.0)
    try:
        creds = CredentialCache(engine, default_base_url="http://127.0.0.1:9", keys=[TEST_KEY])
        async with Dispatcher(engine, client, creds, DispatcherConfig(
                batch_size=1, per_channel_claim=1)) as dispatcher:
            summary = await dispatcher.drain(limit=1)
    finally:
        await client.aclose()
        await engine.dispose()

    assert summary.claimed == 1 and summary.sent == 1
    assert creds.cached() == set(busy)
    assert idle not in creds.cached() and disabled not in creds.cached()


async def test_a_completion_during_an_empty_claim_does_not_end_the_drain(
        make_channel, clean_db: Engine, database_url: str, sim_url):
    """A claim can find nothing because every chat's head is in flight; if
    those rows complete while it runs, the chats it saw as busy have work
    again. The drain claims again instead of stopping with messages due
    (found on PostgreSQL 18: a pass stopped with half of a queue left)."""
    from outbox.database import make_async_engine
    from outbox.dispatch.credentials import CredentialCache
    from outbox.dispatch.dispatcher import Dispatcher, DispatcherConfig
    from outbox.providers.whapi import WhapiClient
    from tests.dispatch_helpers import TEST_KEY

    class SlowEmptyClaims(Dispatcher):
        """Stands in for a slow claim: an empty one returns only after the
        rows in flight have been completed."""

        async def _claim(self, n: int):  # type: ignore[no-untyped-def]
            rows = await super()._claim(n)
            if rows == []:
                for _ in range(200):
                    if self._completer.outstanding == 0:
                        break
                    await asyncio.sleep(0.01)
            return rows

    channel = make_channel(base_url=sim_url)
    enqueue_spread(clean_db, [channel], messages=6, chats=1)  # one chat: one at a time
    engine = make_async_engine(database_url, pool_size=2)
    client = WhapiClient(timeout=5.0)
    try:
        creds = CredentialCache(engine, default_base_url="http://127.0.0.1:9", keys=[TEST_KEY])
        async with SlowEmptyClaims(engine, client, creds, DispatcherConfig()) as dispatcher:
            summary = await dispatcher.drain(max_seconds=30)
    finally:
        await client.aclose()
        await engine.dispose()
    assert summary.sent == 6
    assert outbox_counts(clean_db) == {"sent": 6}


async def test_one_rate_limit_event_is_one_strike(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    """32 requests in flight on one channel all answered 429 (no Retry-After,
    100-500 ms apart): the answers after the first belong to the same event,
    so the channel is paused once, for the configured 30 s, not escalated."""
    channel = make_channel(base_url=sim_url)
    token = channel_tokens(clean_db)[channel]
    enqueue_spread(clean_db, [channel], messages=64, chats=64)
    sim.set_faults(token=token, error_status=429, latency_ms=300, latency_jitter_ms=200)

    summary = await run_dispatcher(database_url, channel_concurrency=32, concurrency=64,
                                   rate_limit_pause_seconds=30)

    rejected = sim.stats().tokens[token].rejected.get(429, 0)
    assert rejected >= 16, f"only {rejected} requests were in flight: the test proves nothing"
    assert summary.sent == 0 and channel in summary.paused_channels
    with clean_db.connect() as conn:
        ch = conn.execute(text(
            "SELECT rate_limit_strikes, pause_cause, "
            "EXTRACT(EPOCH FROM paused_until - now())::float8 AS left "
            "FROM outbox.channels WHERE id = :id"), {"id": channel}).one()
        attempts = conn.execute(
            text("SELECT sum(attempts) FROM outbox.outbox_messages")).scalar_one()
    assert ch.rate_limit_strikes == 1 and ch.pause_cause == "rate_limit"
    assert 25 < ch.left <= 30
    assert attempts == 0


async def test_rate_limit_after_the_pause_is_a_new_strike(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    """A request sent after the event began (here: a second drain once the
    pause ran out) is a new event: the pause doubles."""
    channel = make_channel(base_url=sim_url)
    token = channel_tokens(clean_db)[channel]
    enqueue_spread(clean_db, [channel], messages=8, chats=8)
    sim.set_faults(token=token, error_status=429, latency_ms=50)
    await run_dispatcher(database_url, channel_concurrency=8, rate_limit_pause_seconds=10)
    with clean_db.begin() as conn:
        assert conn.execute(
            text("SELECT rate_limit_strikes FROM outbox.channels")).scalar_one() == 1
        conn.execute(text("UPDATE outbox.channels SET paused_until = now()"))
    await run_dispatcher(database_url, channel_concurrency=8, rate_limit_pause_seconds=10)
    with clean_db.connect() as conn:
        ch = conn.execute(text(
            "SELECT rate_limit_strikes, EXTRACT(EPOCH FROM paused_until - now())::float8 AS left "
            "FROM outbox.channels")).one()
    assert ch.rate_limit_strikes == 2 and 18 < ch.left <= 20


async def test_404_on_a_media_send_fails_that_message_and_the_channel_keeps_sending(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    from sqlalchemy.orm import Session

    from outbox.enqueue import enqueue_many
    from outbox.message_types import MediaMessage, TextMessage

    channel = make_channel(base_url=sim_url)
    missing = "+15550400404"
    plan: list[TextMessage | MediaMessage] = [
        # A media id the provider never handed out: Whapi's documented 404.
        MediaMessage(channel, missing, "image", "jpeg-5f1c0e7a9b3d2c4e-8a6b4c2d0e1f3a5b"),
        *(TextMessage(channel, f"+1555040{n:04d}", f"t{n}") for n in range(10)),
        *(MediaMessage(channel, f"+1555041{n:04d}", "image", "https://example.com/ok.png")
          for n in range(5)),
    ]
    with Session(clean_db) as s, s.begin():
        enqueue_many(s, plan)
    summary = await run_dispatcher(database_url)

    assert (summary.sent, summary.failed) == (15, 1) and not summary.paused_channels
    assert sim.stats().rejected == {404: 1}
    with clean_db.connect() as conn:
        ch = conn.execute(text("SELECT status, pause_cause FROM outbox.channels")).one()
        failed = conn.execute(text(
            "SELECT m.status, m.error, o.status AS outbox_status FROM outbox.messages m "
            "JOIN outbox.outbox_messages o ON o.message_id = m.id "
            "JOIN outbox.chats c ON c.id = m.chat_id WHERE c.wa_chat_id LIKE :chat"),
            {"chat": missing[1:] + "@%"}).one()
    assert (ch.status, ch.pause_cause) == ("active", None)
    assert (failed.status, failed.outbox_status) == ("failed", "failed")
    assert failed.error.startswith("HTTP 404: Media with specified id not found")
