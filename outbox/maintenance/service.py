"""What a maintenance service is, and how it takes its turn.

A service owns its interval, its advisory lock key and `run_once`; the
daemon only schedules it (outbox/dispatch/daemon.py). `run_locked` is the
one way a pass runs: batch after batch, each in a transaction of its own on
one connection, each taking the service's transaction-scoped advisory lock
first. Whichever process gets the lock does the batch; the others skip
their turn. Batches stay short transactions (a prune can delete a million
rows, which must not be one transaction), and the work itself is safe to
share anyway (SKIP LOCKED, idempotent updates).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from outbox.db import queries


class MaintenanceService(Protocol):
    name: str  # the scheduler's job id and the logs' `job`
    interval_seconds: float
    first_run_after_seconds: float  # after the daemon starts
    lock_key: int  # pg_try_advisory_xact_lock's key: one per service

    async def run_once(self, engine: AsyncEngine) -> object:
        """One pass; None when another process holds the lock."""
        ...


Batch = Callable[[AsyncConnection], Awaitable[bool]]


async def run_locked(engine: AsyncEngine, lock_key: int, batch: Batch, *,
                     max_batches: int | None = None) -> bool:
    """Run `batch` in one transaction after another, each under the advisory
    lock `lock_key`, until it returns False (nothing more to do), another
    process holds the lock, or `max_batches` ran. False when the lock was
    taken from the start: another process is doing this pass."""
    done = 0
    async with engine.connect() as conn:
        while max_batches is None or done < max_batches:
            async with conn.begin():
                if not await conn.scalar(text(queries.TRY_MAINTENANCE_LOCK), {"key": lock_key}):
                    return done > 0
                more = await batch(conn)
            done += 1
            if not more:
                break
    return True
