"""The analyzer keeps the hot tables' statistics fresh and (with autovacuum
off) their dead rows few, driven by the tables' change counts; `outbox
status` and the daemon's log warn when autovacuum is off or statistics are
stale.

The table's own `autovacuum_enabled = false` stands in for a server with
autovacuum off, so the tests mean the same on any server.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import structlog
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.maintenance.analyzer import (
    ANALYZE_MIN_CHANGES,
    STALE_AFTER,
    VACUUM_MIN_DEAD_ROWS,
    Analyzer,
    TableAction,
    TableHealth,
    decide,
    health_warnings,
)
from tests.dispatch_helpers import cli, enqueue_spread

NOW = datetime(2026, 1, 1, tzinfo=UTC)
# Report this backend's change counts at its transaction's end, not up to a
# second later (PostgreSQL 15+; before 15 the collector takes ~0.5 s anyway).
FLUSH_STATS = """
DO $$ BEGIN PERFORM pg_stat_force_next_flush();
EXCEPTION WHEN undefined_function THEN NULL; END $$
"""


def health(**kw: Any) -> TableHealth:
    base = TableHealth("outbox_messages", live_rows=1000, dead_rows=0, changes_since_analyze=0,
                       last_analyzed=NOW - timedelta(minutes=1),
                       last_vacuumed=NOW - timedelta(minutes=1), autovacuum=False,
                       counted=True, owned=True, checked_at=NOW)
    return replace(base, **kw)


# --- the rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "action"), [
    ({}, TableAction.NONE),
    ({"changes_since_analyze": ANALYZE_MIN_CHANGES + 100}, TableAction.ANALYZE),
    ({"changes_since_analyze": ANALYZE_MIN_CHANGES + 99}, TableAction.NONE),  # + 10% of 1000
    ({"dead_rows": VACUUM_MIN_DEAD_ROWS + 100}, TableAction.VACUUM),
    ({"dead_rows": VACUUM_MIN_DEAD_ROWS + 100, "changes_since_analyze": 10**6},
     TableAction.VACUUM),  # VACUUM (ANALYZE) does both
    # autovacuum runs: its job, unless it let the statistics go stale
    ({"autovacuum": True, "dead_rows": 10**6}, TableAction.NONE),
    ({"autovacuum": True, "changes_since_analyze": 10**6}, TableAction.NONE),
    ({"autovacuum": True, "changes_since_analyze": 10**6,
      "last_analyzed": NOW - STALE_AFTER - timedelta(seconds=1)}, TableAction.ANALYZE),
    ({"autovacuum": True, "changes_since_analyze": 10**6, "last_analyzed": None},
     TableAction.ANALYZE),
    # not ours to maintain: nothing (a warning instead)
    ({"owned": False, "dead_rows": 10**6, "changes_since_analyze": 10**6}, TableAction.NONE),
])
def test_what_a_table_needs(kw: dict[str, Any], action: TableAction) -> None:
    assert decide(health(**kw)) is action


def test_the_threshold_grows_with_the_table() -> None:
    big = {"live_rows": 1_000_000}
    assert decide(health(**big, changes_since_analyze=50_000)) is TableAction.NONE
    assert decide(health(**big, changes_since_analyze=101_000)) is TableAction.ANALYZE
    assert decide(health(**big, dead_rows=50_000)) is TableAction.NONE
    assert decide(health(**big, dead_rows=101_000)) is TableAction.VACUUM


def test_warnings_name_what_to_do() -> None:
    fine = health(autovacuum=True)
    assert health_warnings([fine]) == []
    off = health_warnings([health()])
    assert [w.key for w in off] == ["autovacuum_off"]
    assert "outbox run" in off[0].text
    stale = health(changes_since_analyze=10**5, last_analyzed=None, dead_rows=10**5,
                   last_vacuumed=NOW - timedelta(hours=1), owned=False)
    keys = [w.key for w in health_warnings([stale])]
    assert keys == ["autovacuum_off", "stale:outbox_messages", "dead_rows:outbox_messages",
                    "not_owner:outbox_messages"]
    uncounted = health_warnings([health(counted=False, autovacuum=False)])
    assert [w.key for w in uncounted] == ["track_counts_off"]


# --- against the database -------------------------------------------------------------------


@pytest.fixture
def autovacuum_off(clean_db: Engine) -> Iterator[Engine]:
    """outbox_messages with autovacuum off and its counters from zero (never analysed)."""
    _flush_pooled_counts(clean_db)
    with clean_db.begin() as conn:
        conn.execute(text(
            "ALTER TABLE outbox.outbox_messages SET (autovacuum_enabled = false)"))
        conn.execute(text("SELECT pg_stat_reset_single_table_counters("
                          "'outbox.outbox_messages'::regclass)"))
    yield clean_db
    with clean_db.begin() as conn:
        conn.execute(text("ALTER TABLE outbox.outbox_messages RESET (autovacuum_enabled)"))


def _flush_pooled_counts(engine: Engine) -> None:
    """An idle backend reports its change counts up to 10 s later (PG 15+),
    so an earlier test's rows could land after the reset below. Closing the
    pool's connections makes them report now (a backend reports on exit)."""
    backends = ("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND backend_type = 'client backend'")
    with engine.connect() as conn:
        before = conn.execute(text(backends)).scalar_one() - 1
    others = engine.pool.checkedin() - 1  # type: ignore[attr-defined] # not the one above
    engine.dispose()
    deadline = time.monotonic() + 5
    with engine.connect() as conn:
        while (conn.execute(text(backends)).scalar_one() - 1 > before - others
               and time.monotonic() < deadline):
            time.sleep(0.05)


def _stats(engine: Engine) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT n_live_tup, n_dead_tup, n_mod_since_analyze, last_analyze, last_vacuum, "
            "analyze_count, vacuum_count FROM pg_stat_user_tables "
            "WHERE relid = 'outbox.outbox_messages'::regclass")).one()


def _wait_for_stats(engine: Engine, predicate: Callable[[Any], bool]) -> Any:
    """The server counts changes asynchronously (a backend reports them when
    it goes idle): poll until they show."""
    deadline = time.monotonic() + 20
    while True:
        row = _stats(engine)
        if predicate(row):
            return row
        assert time.monotonic() < deadline, f"stats never showed: {row}"
        time.sleep(0.1)


def _churn(engine: Engine, channel: uuid.UUID, *, messages: int) -> None:
    """What sending does to the queue table: rows in, claimed, sent, half pruned."""
    enqueue_spread(engine, [channel], messages=messages, chats=100)
    with engine.begin() as conn:
        conn.execute(text("UPDATE outbox.outbox_messages SET status = 'sending', attempts = 1"))
        conn.execute(text("UPDATE outbox.outbox_messages SET status = 'sent', sent_at = now()"))
        conn.execute(text("DELETE FROM outbox.outbox_messages WHERE id % 2 = 0"))
        conn.execute(text(FLUSH_STATS))


async def test_a_churned_table_is_vacuumed_and_analysed(
        make_channel, autovacuum_off: Engine, async_engine: AsyncEngine) -> None:
    channel = make_channel()
    _churn(autovacuum_off, channel, messages=3000)
    before = _wait_for_stats(autovacuum_off, lambda r: r.n_dead_tup >= 3000)
    assert before.last_analyze is None and before.last_vacuum is None

    result = await Analyzer().run_once(async_engine)
    assert result is not None and "outbox_messages" in result.vacuumed
    after = _wait_for_stats(autovacuum_off, lambda r: r.vacuum_count > before.vacuum_count)
    assert after.n_dead_tup < 100 and after.n_mod_since_analyze < 100
    assert after.last_analyze is not None and after.last_vacuum is not None

    # Nothing changed since: the next pass does nothing to it.
    again = await Analyzer().run_once(async_engine)
    assert again is not None and "outbox_messages" not in again.analyzed + again.vacuumed
    assert _stats(autovacuum_off).vacuum_count == after.vacuum_count


async def test_a_quiet_table_is_left_alone(make_channel, autovacuum_off: Engine,
                                           async_engine: AsyncEngine) -> None:
    channel = make_channel()
    enqueue_spread(autovacuum_off, [channel], messages=50, chats=10)
    with autovacuum_off.begin() as conn:
        conn.execute(text(FLUSH_STATS))
    _wait_for_stats(autovacuum_off, lambda r: r.n_mod_since_analyze >= 50)
    result = await Analyzer().run_once(async_engine)
    assert result is not None and "outbox_messages" not in result.analyzed + result.vacuumed
    assert _stats(autovacuum_off).analyze_count == 0


async def test_a_pass_skips_while_another_process_holds_the_lock(
        make_channel, autovacuum_off: Engine, async_engine: AsyncEngine) -> None:
    channel = make_channel()
    _churn(autovacuum_off, channel, messages=3000)
    _wait_for_stats(autovacuum_off, lambda r: r.n_dead_tup >= 3000)
    with autovacuum_off.connect() as other:
        other.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": Analyzer.lock_key})
        assert await Analyzer().run_once(async_engine) is None
        other.rollback()
    assert _stats(autovacuum_off).vacuum_count == 0
    result = await Analyzer().run_once(async_engine)
    assert result is not None and "outbox_messages" in result.vacuumed


async def test_a_cron_pass_maintains_the_tables_too(
        make_channel, autovacuum_off: Engine, async_engine: AsyncEngine) -> None:
    """`dispatch --once` and the HTTP cron endpoint: no daemon does it for them."""
    from outbox.maintenance.upkeep import run_upkeep

    channel = make_channel()
    _churn(autovacuum_off, channel, messages=3000)
    _wait_for_stats(autovacuum_off, lambda r: r.n_dead_tup >= 3000)
    upkeep = await run_upkeep(async_engine)
    assert upkeep.maintained is not None and "outbox_messages" in upkeep.maintained.vacuumed
    assert _wait_for_stats(autovacuum_off, lambda r: r.vacuum_count == 1).n_dead_tup < 100


async def test_the_log_warns_once_when_autovacuum_is_off(
        autovacuum_off: Engine, async_engine: AsyncEngine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Analyzer, "_warned", set())  # as in a new process
    with structlog.testing.capture_logs() as logs:
        await Analyzer().run_once(async_engine)
        await Analyzer().run_once(async_engine)
    warnings = [e for e in logs if e["event"] == "table_upkeep_warning"]
    assert [w["kind"] for w in warnings] == ["autovacuum_off"]
    assert "outbox_messages" in warnings[0]["warning"]


def test_status_warns_when_autovacuum_is_off_and_statistics_are_stale(
        make_channel, autovacuum_off: Engine) -> None:
    channel = make_channel()
    _churn(autovacuum_off, channel, messages=3000)
    _wait_for_stats(autovacuum_off, lambda r: r.n_dead_tup >= 3000)

    plain = cli("status")
    assert plain.returncode == 0, plain.stderr
    warnings = [line for line in plain.stdout.splitlines() if line.startswith("warning: ")]
    assert any("autovacuum is off for" in w and "outbox_messages" in w for w in warnings)
    assert any(w.startswith("warning: outbox_messages: statistics stale") for w in warnings)
    assert any("dead rows not vacuumed" in w for w in warnings)

    body = json.loads(cli("status", "--json").stdout)
    (table,) = [t for t in body["tables"] if t["table"] == "outbox_messages"]
    assert table["stale"] is True and table["autovacuum"] is False
    assert table["last_analyzed"] is None and table["changes_since_analyze"] >= 3000
    assert any("statistics stale" in w for w in body["warnings"])

    # After a pass, status has nothing to say about that table's statistics.
    with autovacuum_off.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(
            text("VACUUM (ANALYZE) outbox.outbox_messages"))
    _wait_for_stats(autovacuum_off, lambda r: r.last_analyze is not None)
    after = cli("status", "--json")
    assert not any(w.startswith("outbox_messages:") for w in json.loads(after.stdout)["warnings"])
