"""Channels whose timed pause has run out become active again.

Claims already ignore an expired pause; this keeps `status` and `outbox
status` truthful and clears the reason.
"""

from __future__ import annotations

import uuid

import structlog

from outbox.db import queries
from outbox.db.direct import DirectConnection
from outbox.db.driver_sql import driver_sql
from outbox.maintenance.service import Database, run_locked

UNPAUSE_INTERVAL_SECONDS = 5.0
UNPAUSE_LOCK_KEY = 0x0B0C_0002

_UNPAUSE_EXPIRED = driver_sql(queries.UNPAUSE_EXPIRED)

log = structlog.get_logger(__name__)


class Unpauser:
    name = "unpauser"
    interval_seconds = UNPAUSE_INTERVAL_SECONDS
    first_run_after_seconds = UNPAUSE_INTERVAL_SECONDS
    lock_key = UNPAUSE_LOCK_KEY

    async def run_once(self, database: Database) -> list[uuid.UUID] | None:
        """The channels made active again (None: another process has the lock)."""
        ids: list[uuid.UUID] = []

        async def unpause(db: DirectConnection) -> bool:
            ids.extend(r[0] for r in await db.fetchall(_UNPAUSE_EXPIRED, {}))
            return False  # one statement takes every expired pause

        if not await run_locked(database, self.lock_key, unpause):
            return None
        for channel_id in ids:
            log.info("channel_unpaused", channel_id=str(channel_id))
        return ids
