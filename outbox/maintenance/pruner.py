"""Delete what is no longer work, in batches: old `sent` and `cancelled`
outbox rows (the hot table stays small) and sessions a week past their end.

The `messages` table keeps the permanent record (status, WhatsApp id).
"""

from __future__ import annotations

import structlog

from outbox.db import access_queries, queries
from outbox.db.direct import DirectConnection
from outbox.db.driver_sql import driver_sql
from outbox.maintenance.service import Database, run_locked

_PRUNE_SENT = driver_sql(queries.PRUNE_SENT)
_PRUNE_CANCELLED = driver_sql(queries.PRUNE_CANCELLED)
_PRUNE_SESSIONS = driver_sql(access_queries.PRUNE_SESSIONS)

PRUNE_INTERVAL_SECONDS = 60.0
PRUNE_LOCK_KEY = 0x0B0C_0003
PRUNE_BATCH = 5000
PRUNE_MAX_BATCHES_PER_RUN = 200  # bounded work per run; the next run continues
SESSION_KEEP_SECONDS = 7 * 86400.0  # ended sessions answer "who was signed in when" a week

log = structlog.get_logger(__name__)


class Pruner:
    name = "pruner"
    interval_seconds = PRUNE_INTERVAL_SECONDS
    # Not in the daemon's first seconds: it is never urgent, a claim is.
    first_run_after_seconds = 10.0
    lock_key = PRUNE_LOCK_KEY

    def __init__(self, *, older_than_seconds: float, batch: int = PRUNE_BATCH,
                 max_batches: int = PRUNE_MAX_BATCHES_PER_RUN) -> None:
        self.older_than_seconds = older_than_seconds
        self.batch = batch
        self.max_batches = max_batches

    async def run_once(self, database: Database) -> int | None:
        """Rows deleted, outbox rows and sessions (None: another process has
        the lock)."""
        total = 0

        async def prune(db: DirectConnection) -> bool:
            nonlocal total
            more = False
            for statement, params in (
                    (_PRUNE_SENT, {"older_than_seconds": self.older_than_seconds}),
                    (_PRUNE_CANCELLED, {"older_than_seconds": self.older_than_seconds}),
                    (_PRUNE_SESSIONS, {"keep_seconds": SESSION_KEEP_SECONDS})):
                deleted = await db.execute(statement, {**params, "limit": self.batch})
                total += deleted
                more = more or deleted >= self.batch
            return more

        if not await run_locked(database, self.lock_key, prune, max_batches=self.max_batches):
            return None
        if total:
            log.info("pruned_rows", rows=total)
        return total
