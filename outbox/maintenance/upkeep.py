"""The upkeep a cron pass does before it drains: with no daemon, nobody else
puts a dead worker's rows back in the queue, lifts a pause that ran out,
prunes sent rows, events and finished status callbacks, or (with
autovacuum off) analyses and vacuums the hot tables.

`dispatch --once` and `POST /v1/cron/dispatch` both run it. Safe next to
daemons and other cron passes: each service takes its own advisory lock,
and a pass that finds it taken skips that service (another process is
doing it). Each pruner's pass with nothing to do is one short statement
(they read only the oldest rows), so a pass every minute costs little.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from outbox.maintenance.analyzer import Analyzer, AnalyzerResult
from outbox.maintenance.delivery_pruner import DeliveryPruner, DeliveryPruneResult
from outbox.maintenance.event_pruner import EventPruner
from outbox.maintenance.pruner import Pruner
from outbox.maintenance.rescuer import Rescuer, RescueResult
from outbox.maintenance.service import Database, maintenance_connection
from outbox.maintenance.unpauser import Unpauser
from outbox.settings import Settings


@dataclass(frozen=True, slots=True)
class Upkeep:
    rescued: RescueResult | None  # None: another process was rescuing
    unpaused: list[uuid.UUID] | None  # None: another process was unpausing
    maintained: AnalyzerResult | None = None  # None: another process was at it
    pruned: int | None = None  # sent and cancelled rows, ended sessions
    events_pruned: int | None = None
    deliveries_pruned: DeliveryPruneResult | None = None


async def run_upkeep(database: Database, settings: Settings | None = None) -> Upkeep:
    """Rescue expired leases, lift expired pauses, prune (how long rows are
    kept: `settings`, else the settings' defaults), then ANALYZE/VACUUM the
    hot tables if their change counts say so (one pass each, on one
    connection; the last is one read of pg_stat_user_tables when they don't)."""
    prune_sent_after_seconds = (settings.prune_sent_after_seconds if settings else
                                Settings.model_fields["prune_sent_after_seconds"].default)
    retention = (settings.events_retention if settings else
                 Settings.model_fields["events_retention"].default)
    events_retention_seconds = retention.total_seconds()
    async with maintenance_connection(database) as db:
        rescued = await Rescuer().run_once(db)
        unpaused = await Unpauser().run_once(db)
        pruned = await Pruner(older_than_seconds=prune_sent_after_seconds).run_once(db)
        events = await EventPruner(older_than_seconds=events_retention_seconds).run_once(db)
        deliveries = await DeliveryPruner(
            older_than_seconds=events_retention_seconds).run_once(db)
        maintained = await Analyzer().run_once(db)
    return Upkeep(rescued, unpaused, maintained, pruned, events, deliveries)
