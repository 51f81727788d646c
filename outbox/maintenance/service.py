"""What a maintenance service is, and how it takes its turn.

A service owns its interval, its advisory lock key and `run_once`; the
daemon only schedules it (outbox/dispatch/daemon.py). `run_locked` is the
one way a pass runs: batch after batch, each in a transaction of its own on
one direct psycopg connection (db/direct.py: no SQLAlchemy, which a cron
pass would otherwise import for its upkeep alone), each taking the
service's transaction-scoped advisory lock first. Whichever process gets
the lock does the batch; the others skip their turn. Batches stay short
transactions (a prune can delete a million rows, which must not be one
transaction), and the work itself is safe to share anyway (SKIP LOCKED,
idempotent updates).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol, Union

from outbox.db import queries
from outbox.db.conninfo import DatabaseTarget
from outbox.db.direct import DirectConnection
from outbox.db.driver_sql import driver_sql

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

#: Where a pass runs: a connection the caller keeps (the daemon's, shared by
#: its services), or a database to open one on for the pass.
Database = Union[DirectConnection, DatabaseTarget, "AsyncEngine"]

_TRY_LOCK = driver_sql(queries.TRY_MAINTENANCE_LOCK)


class MaintenanceService(Protocol):
    name: str  # the scheduler's job id and the logs' `job`
    interval_seconds: float
    first_run_after_seconds: float  # after the daemon starts
    lock_key: int  # pg_try_advisory_xact_lock's key: one per service

    async def run_once(self, database: Database) -> object:
        """One pass; None when another process holds the lock."""
        ...


Batch = Callable[[DirectConnection], Awaitable[bool]]


async def try_lock(db: DirectConnection, lock_key: int) -> bool:
    """Take the service's advisory lock for the transaction `db` is in."""
    row = await db.fetchone(_TRY_LOCK, {"key": lock_key})
    return bool(row and row[0])


@asynccontextmanager
async def maintenance_connection(database: Database) -> AsyncIterator[DirectConnection]:
    """`database` itself if it is a connection; else one opened for the block."""
    if isinstance(database, DirectConnection):
        yield database
        return
    db = DirectConnection.to(database, application_name="outbox-maintenance")
    try:
        yield db
    finally:
        await db.aclose()


async def run_locked(database: Database, lock_key: int, batch: Batch, *,
                     max_batches: int | None = None) -> bool:
    """Run `batch` in one transaction after another, each under the advisory
    lock `lock_key`, until it returns False (nothing more to do), another
    process holds the lock, or `max_batches` ran. False when the lock was
    taken from the start: another process is doing this pass."""
    done = 0
    async with maintenance_connection(database) as db:
        while max_batches is None or done < max_batches:
            async with db.transaction():
                if not await try_lock(db, lock_key):
                    return done > 0
                more = await batch(db)
            done += 1
            if not more:
                break
    return True
