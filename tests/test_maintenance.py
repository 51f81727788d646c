"""outbox/maintenance/: each service's pass against a real database.

Time is the point, so rows are back-dated (no sleeps); every test asserts
what the database holds afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

from outbox.maintenance.pruner import Pruner
from outbox.maintenance.rescuer import Rescuer, RescueResult
from outbox.maintenance.service import MaintenanceService
from outbox.maintenance.unpauser import Unpauser
from outbox.maintenance.webhook_backlog import WebhookBacklog
from tests.dispatch_helpers import enqueue_spread, outbox_counts


@pytest.fixture
async def one_connection(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine that can never hand out a second connection (it would wait
    two seconds, then raise)."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=2)
    yield engine
    await engine.dispose()


@pytest.fixture
def held_lock(clean_db: Engine) -> Iterator[Callable[[int], Callable[[], None]]]:
    """Hold a service's advisory lock from another session, as a second
    daemon in the middle of its pass would; returns its release."""
    held: list[Connection] = []

    def release(conn: Connection) -> None:
        if conn in held:
            held.remove(conn)
            conn.rollback()  # the transaction-scoped lock goes with it
            conn.close()

    def hold(key: int) -> Callable[[], None]:
        conn = clean_db.connect()
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        held.append(conn)
        return lambda: release(conn)

    yield hold
    for conn in list(held):
        release(conn)


def _ids(engine: Engine, sql: str) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)).scalars())


def _send_out(engine: Engine, *, minutes_ago: dict[int, float]) -> None:
    """Mark outbox rows sent, `minutes_ago` each (by row id)."""
    with engine.begin() as conn:
        for row_id, minutes in minutes_ago.items():
            conn.execute(text(
                "UPDATE outbox.outbox_messages SET status = 'sent', "
                "sent_at = now() - make_interval(secs => 60 * CAST(:m AS float8)) WHERE id = :id"),
                {"m": minutes, "id": row_id})


# --- pruner ---------------------------------------------------------------------------


async def test_pruner_deletes_only_sent_rows_older_than_the_horizon(
        make_channel, clean_db: Engine, async_engine: AsyncEngine) -> None:
    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=8, chats=8)
    ids = _ids(clean_db, "SELECT id FROM outbox.outbox_messages ORDER BY id")
    # Two old sent rows, one sent just inside the horizon, one sent just now;
    # an old failed row and the queued ones are never the pruner's.
    _send_out(clean_db, minutes_ago={ids[0]: 120, ids[1]: 61, ids[2]: 59, ids[3]: 0})
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.outbox_messages SET status = 'failed', "
                          "updated_at = now() - interval '1 day' WHERE id = :id"),
                     {"id": ids[4]})

    deleted = await Pruner(older_than_seconds=3600).run_once(async_engine)

    assert deleted == 2
    assert _ids(clean_db, "SELECT id FROM outbox.outbox_messages ORDER BY id") == ids[2:]
    assert outbox_counts(clean_db) == {"sent": 2, "failed": 1, "queued": 3}
    # The permanent record stays: every message is still there.
    assert _ids(clean_db, "SELECT count(*) FROM outbox.messages") == [8]


async def test_pruner_works_in_batches_and_bounds_one_run(
        make_channel, clean_db: Engine, async_engine: AsyncEngine) -> None:
    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=7, chats=7)
    ids = _ids(clean_db, "SELECT id FROM outbox.outbox_messages ORDER BY id")
    _send_out(clean_db, minutes_ago={i: 600 - n for n, i in enumerate(ids)})
    pruner = Pruner(older_than_seconds=60, batch=2, max_batches=3)

    assert await pruner.run_once(async_engine) == 6  # three full batches, then it stops
    assert _ids(clean_db, "SELECT id FROM outbox.outbox_messages") == [ids[-1]]  # oldest first
    assert await pruner.run_once(async_engine) == 1  # the next run continues
    assert await pruner.run_once(async_engine) == 0
    assert outbox_counts(clean_db) == {}


async def test_pruner_with_nothing_old_deletes_nothing(
        make_channel, clean_db: Engine, async_engine: AsyncEngine) -> None:
    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=3, chats=3)
    ids = _ids(clean_db, "SELECT id FROM outbox.outbox_messages ORDER BY id")
    _send_out(clean_db, minutes_ago=dict.fromkeys(ids, 1.0))
    assert await Pruner(older_than_seconds=3600).run_once(async_engine) == 0
    assert outbox_counts(clean_db) == {"sent": 3}


async def test_pruner_deletes_cancelled_rows_past_the_horizon_and_keeps_the_message(
        make_channel, clean_db: Engine, async_engine: AsyncEngine) -> None:
    from outbox.admin.messages import cancel

    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=4, chats=4)
    with clean_db.connect() as conn:
        rows = conn.execute(text(
            "SELECT id, message_id FROM outbox.outbox_messages ORDER BY id")).all()
    with Session(clean_db) as session, session.begin():
        for row in rows[:3]:
            cancel(session, row.message_id)
    # Two cancelled long ago, one just now; the queued one is not the pruner's.
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.outbox_messages "
                          "SET updated_at = now() - interval '2 hours' WHERE id = ANY(:ids)"),
                     {"ids": [rows[0].id, rows[1].id]})

    assert await Pruner(older_than_seconds=3600).run_once(async_engine) == 2

    assert outbox_counts(clean_db) == {"cancelled": 1, "queued": 1}
    with clean_db.connect() as conn:
        statuses = conn.execute(text(
            "SELECT status, count(*) FROM outbox.messages GROUP BY status")).all()
    assert dict(statuses) == {"cancelled": 3, "pending": 1}  # the record stays


async def test_pruner_deletes_sessions_a_week_past_their_end(
        clean_db: Engine, async_engine: AsyncEngine) -> None:
    from outbox.admin.sessions import sign_in
    from outbox.admin.users import create_user

    with Session(clean_db) as session, session.begin():
        session.execute(text("DELETE FROM outbox.users WHERE workspace_id = 'prune-ws'"))
        create_user(session, workspace_id="prune-ws", email="ann@example.com", role="agent",
                    password="correct horse battery")
        ids = [sign_in(session, workspace_id="prune-ws", email="ann@example.com",
                       password="correct horse battery").id for _ in range(4)]
    with clean_db.begin() as conn:
        back = "now() - interval '8 days'"
        conn.execute(text(f"UPDATE outbox.sessions SET expires_at = {back} WHERE id = :id"),
                     {"id": ids[0]})  # expired long ago: goes
        conn.execute(text(f"UPDATE outbox.sessions SET revoked_at = {back} WHERE id = :id"),
                     {"id": ids[1]})  # signed out long ago: goes
        conn.execute(text("UPDATE outbox.sessions SET expires_at = now() - interval '1 day' "
                          "WHERE id = :id"), {"id": ids[2]})  # ended yesterday: kept

    assert await Pruner(older_than_seconds=3600).run_once(async_engine) == 2

    with clean_db.connect() as conn:
        left = set(conn.execute(text("SELECT s.id FROM outbox.sessions s JOIN outbox.users u "
                                     "ON u.id = s.user_id WHERE u.workspace_id = 'prune-ws'"))
                   .scalars())
    assert left == {ids[2], ids[3]}


# --- unpauser -------------------------------------------------------------------------


def _pause(engine: Engine, channel: uuid.UUID, *, status: str, seconds: float | None) -> None:
    """Pause `channel`: for `seconds` from now (negative: ran out that long
    ago), or until a human resumes it (None)."""
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE outbox.channels SET status = :status, pause_reason = 'test', "
            "pause_cause = 'rate_limit', paused_until = CASE WHEN CAST(:s AS float8) IS NULL "
            "THEN NULL ELSE now() + make_interval(secs => CAST(:s AS float8)) END "
            "WHERE id = :id"), {"status": status, "s": seconds, "id": channel})


def _channel(engine: Engine, channel: uuid.UUID) -> tuple[object, ...]:
    with engine.connect() as conn:
        return tuple(conn.execute(text(
            "SELECT status, paused_until IS NOT NULL, pause_reason, pause_cause "
            "FROM outbox.channels WHERE id = :id"), {"id": channel}).one())


async def test_unpauser_reactivates_only_channels_whose_timed_pause_ran_out(
        make_channel, clean_db: Engine, async_engine: AsyncEngine) -> None:
    ran_out = make_channel(name="ran-out", phone="+15550000001")
    ran_out_active = make_channel(name="429", phone="+15550000002")
    running = make_channel(name="running", phone="+15550000003")
    by_hand = make_channel(name="by-hand", phone="+15550000004")
    disabled = make_channel(name="disabled", phone="+15550000005")
    _pause(clean_db, ran_out, status="paused", seconds=-60)
    _pause(clean_db, ran_out_active, status="active", seconds=-1)  # a 429's pause
    _pause(clean_db, running, status="paused", seconds=600)
    _pause(clean_db, by_hand, status="paused", seconds=None)
    _pause(clean_db, disabled, status="disabled", seconds=-60)

    unpaused = await Unpauser().run_once(async_engine)

    assert unpaused is not None and set(unpaused) == {ran_out, ran_out_active}
    assert _channel(clean_db, ran_out) == ("active", False, None, None)
    assert _channel(clean_db, ran_out_active) == ("active", False, None, None)
    assert _channel(clean_db, running) == ("paused", True, "test", "rate_limit")
    assert _channel(clean_db, by_hand) == ("paused", False, "test", "rate_limit")
    assert _channel(clean_db, disabled) == ("disabled", True, "test", "rate_limit")
    assert await Unpauser().run_once(async_engine) == []  # nothing left to do


# --- rescuer --------------------------------------------------------------------------


def _claim_all(engine: Engine, *, lease_seconds: float, last_attempt: bool = False,
               started: bool = True) -> None:
    """Claim every queued row, as CLAIM does; `started`: and their requests
    went out (as the sender marks them)."""
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE outbox.outbox_messages SET status = 'sending', attempts = attempts + 1, "
            "claim_token = gen_random_uuid(), "
            "locked_until = now() + make_interval(secs => :lease), "
            "send_started_at = CASE WHEN :started THEN now() END"
            + (", max_attempts = attempts + 1" if last_attempt else "")
            + " WHERE status = 'queued'"), {"lease": lease_seconds, "started": started})


async def test_rescuer_requeues_expired_leases_and_dead_letters_last_attempts(
        make_channel, clean_db: Engine, async_engine: AsyncEngine) -> None:
    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=5, chats=5)
    ids = _ids(clean_db, "SELECT id FROM outbox.outbox_messages ORDER BY id")
    _claim_all(clean_db, lease_seconds=-30)  # the worker died half a minute ago
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.outbox_messages SET max_attempts = 1 WHERE id = :id"),
                     {"id": ids[0]})
        conn.execute(text("UPDATE outbox.outbox_messages SET locked_until = now() + "
                          "interval '1 minute' WHERE id = :id"), {"id": ids[1]})  # still alive

    # Small batches: one pass takes them all the same.
    assert await Rescuer(batch=1).run_once(async_engine) == RescueResult(requeued=3, failed=1)

    with clean_db.connect() as conn:
        rows = {r.id: r for r in conn.execute(text(
            "SELECT o.id, o.status, o.attempts, o.claim_token, m.status AS message "
            "FROM outbox.outbox_messages o JOIN outbox.messages m ON m.id = o.message_id"))}
    assert (rows[ids[0]].status, rows[ids[0]].message) == ("failed", "failed")
    assert rows[ids[1]].status == "sending" and rows[ids[1]].claim_token is not None
    for i in ids[2:]:
        # Back in the queue; the attempt stays spent (the provider may have it).
        assert (rows[i].status, rows[i].attempts, rows[i].claim_token) == ("queued", 1, None)
        assert rows[i].message == "pending"


async def test_rescuer_gives_back_the_attempt_of_rows_whose_request_never_started(
        make_channel, clean_db: Engine, async_engine: AsyncEngine) -> None:
    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=4, chats=4)
    ids = _ids(clean_db, "SELECT id FROM outbox.outbox_messages ORDER BY id")
    with clean_db.begin() as conn:  # two earlier attempts failed; one was the last
        conn.execute(text("UPDATE outbox.outbox_messages SET attempts = 1, next_attempt_at = "
                          "now() - interval '1 hour' WHERE id = ANY(:ids)"), {"ids": ids[2:]})
    _claim_all(clean_db, lease_seconds=-30, started=False, last_attempt=True)
    due_before = dict(_due(clean_db))

    assert await Rescuer().run_once(async_engine) == RescueResult(
        requeued=4, failed=0, refunded=4)

    with clean_db.connect() as conn:
        rows = conn.execute(text(
            "SELECT id, status, attempts, claim_token, last_error, next_attempt_at "
            "FROM outbox.outbox_messages ORDER BY id")).all()
    # Never sent: the attempt comes back, even the last one; no backoff, and
    # the row keeps its time (so its place), like a released row.
    assert [(r.status, r.attempts, r.claim_token) for r in rows] == [
        ("queued", 0, None), ("queued", 0, None), ("queued", 1, None), ("queued", 1, None)]
    assert all("before the request started" in r.last_error for r in rows)
    assert {r.id: r.next_attempt_at for r in rows} == due_before


def _due(engine: Engine) -> list[tuple[int, object]]:
    with engine.connect() as conn:
        return [(r.id, r.next_attempt_at) for r in conn.execute(text(
            "SELECT id, next_attempt_at FROM outbox.outbox_messages"))]


# --- taking turns ---------------------------------------------------------------------


@pytest.mark.parametrize("service", [
    Rescuer(), Unpauser(), Pruner(older_than_seconds=0)], ids=lambda s: s.name)
async def test_a_pass_skips_while_another_process_holds_the_lock(
        service: MaintenanceService, make_channel, clean_db: Engine, async_engine: AsyncEngine,
        held_lock: Callable[[int], Callable[[], None]]) -> None:
    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=2, chats=2)
    ids = _ids(clean_db, "SELECT id FROM outbox.outbox_messages ORDER BY id")
    _send_out(clean_db, minutes_ago={ids[0]: 5})
    _claim_all(clean_db, lease_seconds=-5)
    _pause(clean_db, channel, status="paused", seconds=-5)
    before = (outbox_counts(clean_db), _channel(clean_db, channel))

    release = held_lock(service.lock_key)
    assert await service.run_once(async_engine) is None
    assert (outbox_counts(clean_db), _channel(clean_db, channel)) == before

    release()
    held_lock(service.lock_key + 1000)  # another service's lock is no obstacle
    assert await service.run_once(async_engine) is not None
    assert (outbox_counts(clean_db), _channel(clean_db, channel)) != before


async def test_every_pass_runs_on_one_connection(
        make_channel, clean_db: Engine, one_connection: AsyncEngine) -> None:
    """The lock and the work share one connection and one transaction per
    batch (a pass used to hold one pooled connection for the lock and take
    another for the work)."""
    channel = make_channel()
    enqueue_spread(clean_db, [channel], messages=6, chats=6)
    ids = _ids(clean_db, "SELECT id FROM outbox.outbox_messages ORDER BY id")
    _send_out(clean_db, minutes_ago=dict.fromkeys(ids[:3], 10.0))
    _claim_all(clean_db, lease_seconds=-5)
    _pause(clean_db, channel, status="paused", seconds=-5)

    assert await Rescuer(batch=1).run_once(one_connection) == RescueResult(3, 0)
    assert await Unpauser().run_once(one_connection) == [channel]
    assert await Pruner(older_than_seconds=60, batch=1).run_once(one_connection) == 3
    assert outbox_counts(clean_db) == {"queued": 3}


def test_every_service_has_a_lock_of_its_own() -> None:
    from outbox.dispatch.daemon import maintenance_services
    from outbox.settings import Settings

    services = [*maintenance_services(Settings()), WebhookBacklog()]
    assert len({s.lock_key for s in services}) == len(services)
    assert len({s.name for s in services}) == len(services)
    assert all(s.interval_seconds > 0 and s.first_run_after_seconds >= 0 for s in services)


# --- webhook backlog --------------------------------------------------------------------


@pytest.fixture
def backlog(make_channel, clean_db: Engine) -> Iterator[uuid.UUID]:  # type: ignore[no-untyped-def]
    """One early status that never matched (two hours old) and one fresh."""
    channel = make_channel()
    with clean_db.begin() as conn:
        conn.execute(text(
            "INSERT INTO outbox.webhook_status_backlog "
            "(channel_id, wa_message_id, status, status_at, received_at) VALUES "
            "(:c, 'old', 'delivered', now(), now() - interval '2 hours'), "
            "(:c, 'fresh', 'delivered', now(), now())"), {"c": channel})
    yield channel


def _backlogged(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.execute(text(
            "SELECT wa_message_id FROM outbox.webhook_status_backlog")).scalars())


def test_webhook_backlog_drops_statuses_that_waited_too_long(
        backlog: uuid.UUID, clean_db: Engine) -> None:
    # A live API server of this test run may take a turn too: either pass
    # does the same work, so the database is what counts.
    for _ in range(5):
        if WebhookBacklog().run_once(clean_db) is not None:
            break
    assert _backlogged(clean_db) == ["fresh"]


def test_webhook_backlog_skips_while_another_process_holds_the_lock(
        backlog: uuid.UUID, clean_db: Engine,
        held_lock: Callable[[int], Callable[[], None]]) -> None:
    service = WebhookBacklog()
    held_lock(service.lock_key)
    assert service.run_once(clean_db) is None
    assert _backlogged(clean_db) == ["fresh", "old"]
