"""Delete events past OUTBOX_EVENTS_RETENTION, oldest first, in batches.

A client that falls further behind than that gets `410 events_expired`
from the stream and the polling endpoint (outbox/events/reader.py).
"""

from __future__ import annotations

import structlog

from outbox.db import event_queries
from outbox.db.direct import DirectConnection
from outbox.db.driver_sql import driver_sql
from outbox.maintenance.service import Database, run_locked

_PRUNE_EVENTS = driver_sql(event_queries.PRUNE_EVENTS)

EVENT_PRUNE_INTERVAL_SECONDS = 300.0
EVENT_PRUNE_LOCK_KEY = 0x0B0C_0017
EVENT_PRUNE_BATCH = 5000
EVENT_PRUNE_MAX_BATCHES_PER_RUN = 200  # bounded work per run; the next run continues

log = structlog.get_logger(__name__)


class EventPruner:
    name = "event_pruner"
    interval_seconds = EVENT_PRUNE_INTERVAL_SECONDS
    first_run_after_seconds = 20.0  # never urgent
    lock_key = EVENT_PRUNE_LOCK_KEY

    def __init__(self, *, older_than_seconds: float, batch: int = EVENT_PRUNE_BATCH,
                 max_batches: int = EVENT_PRUNE_MAX_BATCHES_PER_RUN) -> None:
        self.older_than_seconds = older_than_seconds
        self.batch = batch
        self.max_batches = max_batches

    async def run_once(self, database: Database) -> int | None:
        """Events deleted (None: another process has the lock)."""
        total = 0

        async def prune(db: DirectConnection) -> bool:
            nonlocal total
            deleted = await db.execute(_PRUNE_EVENTS, {
                "older_than_seconds": self.older_than_seconds, "limit": self.batch})
            total += deleted
            return deleted >= self.batch

        if not await run_locked(database, self.lock_key, prune, max_batches=self.max_batches):
            return None
        if total:
            log.info("pruned_events", events=total)
        return total
