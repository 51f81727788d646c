"""The upkeep a cron pass does before it drains: with no daemon, nobody else
puts a dead worker's rows back in the queue, lifts a pause that ran out,
or (with autovacuum off) analyses and vacuums the hot tables.

`dispatch --once` and `POST /v1/cron/dispatch` both run it. Safe next to
daemons and other cron passes: each service takes its own advisory lock,
and a pass that finds it taken skips that service (another process is
doing it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from outbox.maintenance.analyzer import Analyzer, AnalyzerResult
from outbox.maintenance.rescuer import Rescuer, RescueResult
from outbox.maintenance.service import Database, maintenance_connection
from outbox.maintenance.unpauser import Unpauser


@dataclass(frozen=True, slots=True)
class Upkeep:
    rescued: RescueResult | None  # None: another process was rescuing
    unpaused: list[uuid.UUID] | None  # None: another process was unpausing
    maintained: AnalyzerResult | None = None  # None: another process was at it


async def run_upkeep(database: Database) -> Upkeep:
    """Rescue expired leases, lift expired pauses, then ANALYZE/VACUUM the
    hot tables if their change counts say so (one pass each, on one
    connection; the last is one read of pg_stat_user_tables when they don't)."""
    async with maintenance_connection(database) as db:
        rescued = await Rescuer().run_once(db)
        unpaused = await Unpauser().run_once(db)
        maintained = await Analyzer().run_once(db)
    return Upkeep(rescued, unpaused, maintained)
