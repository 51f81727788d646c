"""Channels whose timed pause has run out become active again.

Claims already ignore an expired pause; this keeps `status` and `outbox
status` truthful and clears the reason.
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from outbox.db import queries
from outbox.maintenance.service import run_locked

UNPAUSE_INTERVAL_SECONDS = 5.0
UNPAUSE_LOCK_KEY = 0x0B0C_0002

log = structlog.get_logger(__name__)


class Unpauser:
    name = "unpauser"
    interval_seconds = UNPAUSE_INTERVAL_SECONDS
    first_run_after_seconds = UNPAUSE_INTERVAL_SECONDS
    lock_key = UNPAUSE_LOCK_KEY

    async def run_once(self, engine: AsyncEngine) -> list[uuid.UUID] | None:
        """The channels made active again (None: another process has the lock)."""
        ids: list[uuid.UUID] = []

        async def unpause(conn: AsyncConnection) -> bool:
            ids.extend((await conn.execute(text(queries.UNPAUSE_EXPIRED))).scalars())
            return False  # one statement takes every expired pause

        if not await run_locked(engine, self.lock_key, unpause):
            return None
        for channel_id in ids:
            log.info("channel_unpaused", channel_id=str(channel_id))
        return ids
