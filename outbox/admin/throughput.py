"""The last minutes' throughput of a workspace: per minute and per channel,
messages sent, retried (an attempt failed and the row went back to the
queue) and failed for good; and per minute the queue's depth at the
minute's end. What the console's operations chart shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from outbox.db import metrics_queries as q
from outbox.errors import InvalidInput

MAX_MINUTES = 24 * 60
KINDS = ("sent", "retried", "failed")


@dataclass(frozen=True, slots=True)
class Throughput:
    since: datetime
    # One per minute, oldest first, zeros included: sent, retried, failed,
    # and `queued` (rows waiting or being sent at the minute's end).
    series: list[dict[str, Any]]
    channels: dict[str, dict[str, int]]   # channel id -> totals over the window

    def as_dict(self) -> dict[str, Any]:
        return {"since": self.since.isoformat(), "series": self.series, "channels": self.channels}


def throughput(session: Session, *, workspace_id: str, minutes: int = 60,
               now: datetime | None = None) -> Throughput:
    """The last `minutes` (1..1440), minute by minute."""
    if not 1 <= minutes <= MAX_MINUTES:
        raise InvalidInput(f"minutes must be 1 to {MAX_MINUTES}", field="minutes")
    end = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    since = end - timedelta(minutes=minutes - 1)
    slots = {since + timedelta(minutes=i): dict.fromkeys(KINDS, 0) for i in range(minutes)}
    channels: dict[str, dict[str, int]] = {}
    for r in session.execute(text(q.THROUGHPUT), {"workspace_id": workspace_id,
                                                  "since": since}):
        minute = r.minute.astimezone(UTC)
        if minute in slots:
            slots[minute][r.what] += r.n
        totals = channels.setdefault(str(r.channel_id), dict.fromkeys(KINDS, 0))
        totals[r.what] += r.n
    moves = {r.minute.astimezone(UTC): int(r.n) for r in session.execute(
        text(q.QUEUE_DEPTH_MOVES), {"workspace_id": workspace_id, "since": since})}
    series = [{"minute": m.isoformat(), **counts, "queued": depth}
              for (m, counts), depth in zip(slots.items(), queue_depths(list(slots), moves),
                                            strict=True)]
    return Throughput(since, series, channels)


def queue_depths(minutes: list[datetime], moves: dict[datetime, int]) -> list[int]:
    """The depth at each minute's end: the running sum of the rows that came
    in (+1) and left (-1) up to it. `moves` before the first minute were
    folded into it by the query; later ones (a clock ahead) are left out."""
    depth = 0
    out = []
    for minute in minutes:
        depth += moves.get(minute, 0)
        out.append(depth)
    return out
