"""Channels whose timed pause has run out become active again.

Claims already ignore an expired pause; this keeps `status` and `outbox
status` truthful and clears the reason.
"""

from __future__ import annotations

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.db import queries

UNPAUSE_INTERVAL_SECONDS = 5.0

log = structlog.get_logger(__name__)


async def unpause_expired(engine: AsyncEngine) -> int:
    async with engine.begin() as conn:
        ids = (await conn.execute(text(queries.UNPAUSE_EXPIRED))).scalars().all()
    for channel_id in ids:
        log.info("channel_unpaused", channel_id=str(channel_id))
    return len(ids)
