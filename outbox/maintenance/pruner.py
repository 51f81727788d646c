"""Delete old `sent` outbox rows in batches: the hot table stays small.

The `messages` table keeps the permanent record (status, WhatsApp id).
"""

from __future__ import annotations

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.db import queries

PRUNE_INTERVAL_SECONDS = 60.0
PRUNE_BATCH = 5000
PRUNE_MAX_BATCHES_PER_RUN = 200  # bounded work per run; the next run continues

log = structlog.get_logger(__name__)


async def prune_sent(engine: AsyncEngine, *, older_than_seconds: float,
                     batch: int = PRUNE_BATCH) -> int:
    total = 0
    for _ in range(PRUNE_MAX_BATCHES_PER_RUN):
        async with engine.begin() as conn:
            result = await conn.execute(text(queries.PRUNE_SENT), {
                "older_than_seconds": older_than_seconds, "limit": batch})
        total += result.rowcount
        if result.rowcount < batch:
            break
    if total:
        log.info("pruned_sent_rows", rows=total)
    return total
