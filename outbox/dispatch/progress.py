"""Progress bars for long work (dispatch --once, the demo): tqdm on stderr."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from outbox.db.conninfo import DatabaseTarget
from outbox.db.dispatch_store import DispatchStore
from outbox.dispatch.outcomes import Decision, Kind

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from outbox.dispatch.dispatcher import ClaimedRow, Observer


async def due_count(database: DatabaseTarget | AsyncEngine) -> int:
    """The rows due now, the bar's total: read once, before the dispatcher
    starts, so on a store of its own."""
    store = DispatchStore.to(database, application_name="outbox-progress")
    try:
        return await store.due_count()
    finally:
        await store.aclose()


@contextmanager
def progress_observer(total: int, *, enabled: bool = True,
                      desc: str = "dispatching") -> Iterator[Observer]:
    """An observer for the dispatcher that advances a bar per finished message
    (sent or failed); retries and releases show in the postfix."""
    if not enabled:
        # No bar: observe nothing (formatting a hidden postfix per message
        # was 1% of a dispatcher's CPU).
        yield _ignore
        return
    # Only with a bar: off a terminal (cron, containers) tqdm is not loaded.
    from tqdm import tqdm

    bar = tqdm(total=total or None, desc=desc, unit="msg",
               dynamic_ncols=True, smoothing=0.1)
    counts = {"sent": 0, "failed": 0, "retried": 0, "released": 0}

    def observe(row: ClaimedRow, decision: Decision) -> None:
        counts[decision.kind.value] += 1
        if decision.kind in (Kind.SENT, Kind.FAILED):
            bar.update(1)
        bar.set_postfix(counts, refresh=False)

    try:
        yield observe
    finally:
        bar.close()


def _ignore(row: ClaimedRow, decision: Decision) -> None:
    pass
