"""Keep the hot tables' statistics fresh and their dead rows few, whether or
not the server's autovacuum runs.

Under sustained load a queue table churns: every message is inserted,
claimed, completed and later pruned, so most of its row versions are dead
and the share of `queued` rows swings. With `autovacuum = off` (some
servers run that way) nothing analyses or vacuums it, and the claim slows
down by the minute (docs/performance.md, "Sustained load and autovacuum").

So every `ANALYZER_INTERVAL_SECONDS` the daemon reads the hot tables'
change counts (pg_stat_user_tables) and, per table:
* ANALYZE when the changes since the last one pass a threshold (and, when
  autovacuum runs, only if autovacuum has let it go stale);
* VACUUM (ANALYZE) when autovacuum does not run and the dead rows pass a
  threshold.
`decide` is that rule, a pure function. The decision runs under an advisory
lock, so of several daemons one does it; VACUUM runs after it on an
autocommit connection (it can't run in a transaction), and SKIP_LOCKED
makes a table someone else is vacuuming a skip, not a wait.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, NamedTuple

import structlog

from outbox.db import table_stats_queries as q
from outbox.db.direct import DirectConnection
from outbox.db.driver_sql import driver_sql
from outbox.maintenance.service import Database, maintenance_connection, try_lock

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

ANALYZER_INTERVAL_SECONDS = 30.0
ANALYZER_LOCK_KEY = 0x0B0C_0015
# ANALYZE after this many changed rows plus a share of the table (autovacuum's
# own default is 50 + 10%; a floor of a thousand keeps a quiet table quiet).
ANALYZE_MIN_CHANGES = 1000
ANALYZE_SHARE = 0.10
# VACUUM (when autovacuum is off) after this many dead rows plus a share.
VACUUM_MIN_DEAD_ROWS = 1000
VACUUM_SHARE = 0.10
# Over its threshold for this long (or never analysed): stale. With
# autovacuum on, that is when we step in; `outbox status` warns about it.
STALE_AFTER = timedelta(minutes=5)

log = structlog.get_logger(__name__)


class TableAction(StrEnum):
    NONE = "none"
    ANALYZE = "analyze"
    VACUUM = "vacuum"  # VACUUM (ANALYZE): both at once


@dataclass(frozen=True, slots=True)
class TableHealth:
    table: str
    live_rows: int
    dead_rows: int
    changes_since_analyze: int
    last_analyzed: datetime | None
    last_vacuumed: datetime | None
    autovacuum: bool  # the server's autovacuum looks after this table
    counted: bool  # track_counts is on (else the counts are all zero)
    owned: bool  # we may VACUUM and ANALYZE it
    checked_at: datetime

    @classmethod
    def from_row(cls, m: Mapping[str, Any]) -> TableHealth:
        return cls(str(m["table_name"]), int(m["live_rows"]), int(m["dead_rows"]),
                   int(m["changes_since_analyze"]), m["last_analyzed"], m["last_vacuumed"],
                   bool(m["autovacuum"]), bool(m["counted"]), bool(m["owned"]),
                   m["checked_at"])

    @property
    def needs_analyze(self) -> bool:
        return self.changes_since_analyze >= ANALYZE_MIN_CHANGES + ANALYZE_SHARE * self.live_rows

    @property
    def needs_vacuum(self) -> bool:
        return self.dead_rows >= VACUUM_MIN_DEAD_ROWS + VACUUM_SHARE * self.live_rows

    @property
    def stale(self) -> bool:
        """Statistics over their threshold for longer than STALE_AFTER."""
        return self.needs_analyze and _older_than(self.last_analyzed, self.checked_at)

    @property
    def bloated(self) -> bool:
        """Dead rows over their threshold for longer than STALE_AFTER."""
        return self.needs_vacuum and _older_than(self.last_vacuumed, self.checked_at)


def _older_than(when: datetime | None, now: datetime) -> bool:
    return when is None or now - when > STALE_AFTER


def decide(t: TableHealth) -> TableAction:
    """What a table needs now (see the module doc)."""
    if not t.owned:
        return TableAction.NONE
    if not t.autovacuum:
        if t.needs_vacuum:
            return TableAction.VACUUM
        return TableAction.ANALYZE if t.needs_analyze else TableAction.NONE
    # Autovacuum's job, unless it has let the statistics go stale (busy
    # workers, or a threshold tuned for bigger tables).
    return TableAction.ANALYZE if t.stale else TableAction.NONE


HEALTH_PARAMS = {"tables": list(q.HOT_TABLES)}
_TABLE_HEALTH = driver_sql(q.TABLE_HEALTH)


def read_health(session: Session, *, schema: str) -> list[TableHealth]:
    """The hot tables' health (`outbox status`)."""
    from sqlalchemy import text

    return [TableHealth.from_row(dict(r._mapping)) for r in session.execute(
        text(q.TABLE_HEALTH), {**HEALTH_PARAMS, "schema": schema})]


class HealthWarning(NamedTuple):
    key: str  # what it is about, stable from pass to pass (the log says each once)
    text: str


def health_warnings(tables: list[TableHealth]) -> list[HealthWarning]:
    """What an operator should know about the hot tables (`outbox status`, the log)."""
    out: list[HealthWarning] = []
    if tables and not all(t.counted for t in tables):
        out.append(HealthWarning("track_counts_off", (
            "track_counts is off: PostgreSQL counts no changes, so nobody can tell when "
            "the tables need ANALYZE or VACUUM")))
    off = [t.table for t in tables if not t.autovacuum]
    if off and all(t.counted for t in tables):
        out.append(HealthWarning("autovacuum_off", (
            f"autovacuum is off for {', '.join(off)}: `outbox run` analyses and vacuums "
            "them itself; without a daemon running, nobody does")))
    for t in tables:
        if t.stale:
            out.append(HealthWarning(f"stale:{t.table}", (
                f"{t.table}: statistics stale ({t.changes_since_analyze} rows changed since "
                f"the last ANALYZE, {_ago(t.last_analyzed, t.checked_at)})")))
        if t.bloated and not t.autovacuum:
            out.append(HealthWarning(f"dead_rows:{t.table}", (
                f"{t.table}: {t.dead_rows} dead rows not vacuumed (last VACUUM "
                f"{_ago(t.last_vacuumed, t.checked_at)})")))
        if not t.owned and (t.stale or (t.bloated and not t.autovacuum)):
            out.append(HealthWarning(f"not_owner:{t.table}", (
                f"{t.table}: our database role does not own it, so it can't ANALYZE or "
                "VACUUM it; run the daemon as its owner, or have the owner do it")))
    return out


def _ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "never"
    return f"{int((now - when).total_seconds())}s ago"


@dataclass(frozen=True, slots=True)
class AnalyzerResult:
    analyzed: list[str]
    vacuumed: list[str]


class Analyzer:
    name = "analyzer"
    interval_seconds = ANALYZER_INTERVAL_SECONDS
    first_run_after_seconds = 5.0  # soon: a restart may find the tables long stale
    lock_key = ANALYZER_LOCK_KEY

    # Each warning once per process, not every pass (a cron pass makes a new Analyzer).
    _warned: set[str] = set()

    async def run_once(self, database: Database) -> AnalyzerResult | None:
        """What this pass analysed and vacuumed (None: another process has the lock)."""
        analyzed: list[str] = []
        to_vacuum: list[TableHealth] = []
        async with maintenance_connection(database) as db:
            async with db.transaction():
                if not await try_lock(db, self.lock_key):
                    return None
                tables = [TableHealth.from_row(r) for r in await db.fetchdicts(
                    _TABLE_HEALTH, {**HEALTH_PARAMS, "schema": db.schema})]
                self._warn(tables)
                for t in tables:
                    action = decide(t)
                    if action is TableAction.ANALYZE:
                        await self._run(db, q.ANALYZE[t.table], t, action)
                        analyzed.append(t.table)
                    elif action is TableAction.VACUUM:
                        to_vacuum.append(t)
            # Outside the transaction (the connection is in autocommit):
            # VACUUM can't run inside one.
            for t in to_vacuum:
                await self._run(db, q.VACUUM_ANALYZE[t.table], t, TableAction.VACUUM)
        return AnalyzerResult(analyzed, [t.table for t in to_vacuum])

    async def _run(self, db: DirectConnection, sql: str, t: TableHealth,
                   action: TableAction) -> None:
        started = time.perf_counter()
        await db.execute(driver_sql(sql))
        log.info("table_maintained", table=t.table, action=action.value,
                 changes_since_analyze=t.changes_since_analyze, dead_rows=t.dead_rows,
                 live_rows=t.live_rows, seconds=round(time.perf_counter() - started, 3))

    def _warn(self, tables: list[TableHealth]) -> None:
        for warning in health_warnings(tables):
            if warning.key not in Analyzer._warned:
                Analyzer._warned.add(warning.key)
                log.warning("table_upkeep_warning", kind=warning.key.split(":")[0],
                            warning=warning.text)
