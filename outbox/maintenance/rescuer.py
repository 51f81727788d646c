"""Rows stuck in `sending` past their lease (the worker died) go back to the queue."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.db import queries

RESCUE_INTERVAL_SECONDS = 15.0
RESCUE_BATCH = 1000

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RescueResult:
    requeued: int
    failed: int


async def rescue_expired(engine: AsyncEngine, *, batch: int = RESCUE_BATCH) -> RescueResult:
    requeued = failed = 0
    while True:
        async with engine.begin() as conn:
            row = (await conn.execute(text(queries.RESCUE_EXPIRED), {"limit": batch})).one()
        requeued += row.requeued
        failed += row.failed
        if row.requeued + row.failed < batch:
            break
    if requeued or failed:
        log.warning("rescued_expired_leases", requeued=requeued, failed=failed)
    return RescueResult(requeued, failed)
