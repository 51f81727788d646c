"""Which claimed rows' requests are about to start, told to the database
before they go out, many rows per statement.

A claim spends an attempt, and rows wait for a send slot after it (the
dispatcher claims a batch ahead of its senders). If the worker dies, the
rescuer gives the attempt back to every row whose request never started
(db/queries.py RESCUE_EXPIRED): without the mark, a SIGKILL spent an
attempt on every row claimed and not yet sent.

A sender awaits `started(row)` once it holds its send slot. Writes are a
group commit: one statement at a time, each carrying every row that became
ready while the previous one ran, so the cost is a statement per handful of
sends and a round trip of latency per request.
"""

from __future__ import annotations

import asyncio

from outbox.db.dispatch_store import ClaimedRow, DispatchStore


class SendStarts:
    def __init__(self, store: DispatchStore) -> None:
        self._store = store
        self._rows: list[ClaimedRow] = []
        self._written: asyncio.Future[None] | None = None  # the waiting rows' batch
        self._writer: asyncio.Task[None] | None = None

    async def started(self, row: ClaimedRow) -> None:
        """Return once the row is recorded as started; raises the store's
        `DatabaseError` if it could not be (then don't send it)."""
        self._rows.append(row)
        if self._written is None:
            self._written = asyncio.get_running_loop().create_future()
            # Retrieved even when every waiter was cancelled (no warning).
            self._written.add_done_callback(_retrieve)
        written = self._written
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="outbox-send-starts")
        # Shielded: a cancelled sender must not cancel its batch-mates' wait.
        await asyncio.shield(written)

    async def _write(self) -> None:
        while self._rows:
            rows, self._rows = self._rows, []
            written, self._written = self._written, None
            assert written is not None
            try:
                await self._store.mark_sends_started(rows)
            except asyncio.CancelledError:
                # Nobody is left to write: no sender may wait forever.
                for batch in (written, self._written):
                    if batch is not None:
                        batch.cancel()
                self._rows, self._written = [], None
                raise
            except Exception as exc:
                written.set_exception(exc)
            else:
                written.set_result(None)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
