"""A database outage, as the dispatcher rides it out.

Claims, credential reads and completions share one `DatabaseOutage`: the
first failure is logged (once per outage, not once per retry), every
failure waits `OutageBackoff`'s delay, and the first success after an
outage logs that the database is back.
"""

from __future__ import annotations

import asyncio

import structlog

from outbox.dispatch.backoff import OutageBackoff

log = structlog.get_logger(__name__)


class DatabaseOutage:
    def __init__(self, backoff: OutageBackoff | None = None) -> None:
        self.backoff = backoff or OutageBackoff()

    async def wait(self, during: str, exc: BaseException) -> None:
        """`during` failed with `exc`: wait before the caller tries again."""
        delay = self.backoff.failed()
        if self.backoff.failures == 1:
            log.error("database_unavailable", during=during,
                      error=type(exc.__cause__ or exc).__name__,
                      detail=str(exc).splitlines()[0][:200] if str(exc) else "",
                      retry_in_seconds=round(delay, 3))
        await asyncio.sleep(delay)

    def ok(self) -> None:
        """A statement went through."""
        if failures := self.backoff.succeeded():
            log.info("database_reachable_again", failed_attempts=failures)
