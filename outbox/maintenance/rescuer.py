"""Rows stuck in `sending` past their lease (the worker died) go back to the queue.

A row whose request had started keeps its attempt spent (the request may
have reached the provider), and on its last attempt is dead-lettered
instead; a row whose request never started gets its attempt back
(db/queries.py RESCUE_EXPIRED).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from outbox.db import queries
from outbox.db.direct import DirectConnection
from outbox.db.driver_sql import driver_sql
from outbox.maintenance.service import Database, run_locked

_RESCUE_EXPIRED = driver_sql(queries.RESCUE_EXPIRED)

RESCUE_INTERVAL_SECONDS = 15.0
RESCUE_LOCK_KEY = 0x0B0C_0001
RESCUE_BATCH = 1000

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RescueResult:
    requeued: int
    failed: int
    refunded: int = 0  # of the requeued: their request never started, attempt given back


class Rescuer:
    name = "rescuer"
    interval_seconds = RESCUE_INTERVAL_SECONDS
    # At once: a crashed predecessor's rows should not wait an interval.
    first_run_after_seconds = 0.0
    lock_key = RESCUE_LOCK_KEY

    def __init__(self, *, batch: int = RESCUE_BATCH) -> None:
        self.batch = batch

    async def run_once(self, database: Database) -> RescueResult | None:
        requeued = failed = refunded = 0

        async def rescue(db: DirectConnection) -> bool:
            nonlocal requeued, failed, refunded
            (row,) = await db.fetchdicts(_RESCUE_EXPIRED, {"limit": self.batch})
            requeued += row["requeued"]
            failed += row["failed"]
            refunded += row["refunded"]
            return bool(row["requeued"] + row["failed"] >= self.batch)

        if not await run_locked(database, self.lock_key, rescue):
            return None
        if requeued or failed:
            log.warning("rescued_expired_leases", requeued=requeued, failed=failed,
                        refunded=refunded)
        return RescueResult(requeued, failed, refunded)
