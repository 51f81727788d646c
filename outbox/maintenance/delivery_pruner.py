"""Status-callback deliveries that are done, deleted; a disabled endpoint's
waiting ones, dead-lettered once they are too old to send.

Delivered and dead-lettered deliveries are kept as long as events
(OUTBOX_EVENTS_RETENTION), so `GET /v1/webhook-endpoints/{id}/deliveries`
explains any event still held. A disabled endpoint's deliveries are never
claimed; re-enabling it sends them (outbox/admin/endpoints.py), unless they
waited longer than a delivery is retried (3 days): then they are
dead-lettered here, and deleted with the others later.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from outbox.db import callback_queries as q
from outbox.db.direct import DirectConnection
from outbox.db.driver_sql import driver_sql
from outbox.events.callbacks import MAX_DELIVERY_AGE_SECONDS
from outbox.maintenance.service import Database, run_locked

_GIVE_UP_DISABLED = driver_sql(q.GIVE_UP_DISABLED)
_PRUNE_DELIVERIES = driver_sql(q.PRUNE_DELIVERIES)

DELIVERY_PRUNE_INTERVAL_SECONDS = 300.0
DELIVERY_PRUNE_LOCK_KEY = 0x0B0C_0018
DELIVERY_PRUNE_BATCH = 5000
DELIVERY_PRUNE_MAX_BATCHES_PER_RUN = 200  # bounded work per run; the next run continues

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryPruneResult:
    deleted: int
    given_up: int  # a disabled endpoint's, dead-lettered


class DeliveryPruner:
    name = "delivery_pruner"
    interval_seconds = DELIVERY_PRUNE_INTERVAL_SECONDS
    first_run_after_seconds = 25.0  # never urgent
    lock_key = DELIVERY_PRUNE_LOCK_KEY

    def __init__(self, *, older_than_seconds: float, batch: int = DELIVERY_PRUNE_BATCH,
                 max_batches: int = DELIVERY_PRUNE_MAX_BATCHES_PER_RUN) -> None:
        self.older_than_seconds = older_than_seconds
        self.batch = batch
        self.max_batches = max_batches

    async def run_once(self, database: Database) -> DeliveryPruneResult | None:
        """What this pass did (None: another process has the lock)."""
        deleted = given_up = 0

        async def prune(db: DirectConnection) -> bool:
            nonlocal deleted, given_up
            stopped = await db.execute(_GIVE_UP_DISABLED, {
                "max_age_seconds": MAX_DELIVERY_AGE_SECONDS, "limit": self.batch})
            done = await db.execute(_PRUNE_DELIVERIES, {
                "older_than_seconds": self.older_than_seconds, "limit": self.batch})
            given_up += stopped
            deleted += done
            return stopped >= self.batch or done >= self.batch

        if not await run_locked(database, self.lock_key, prune, max_batches=self.max_batches):
            return None
        if deleted or given_up:
            log.info("pruned_deliveries", deliveries=deleted, given_up=given_up)
        return DeliveryPruneResult(deleted, given_up)
