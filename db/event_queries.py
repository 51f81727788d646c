"""Events (outbox.events): how they are read and pruned, as SQL.

Every statement that changes a message, chat or channel writes its events
itself, in a CTE (`INSERT INTO outbox.events ... SELECT outbox.next_event_id()`):
the event commits if and only if the change does, and costs no extra round
trip. Those CTEs live with their statements (db/queries.py,
db/webhook_queries.py, db/inbox_queries.py, db/admin_queries.py).

Why the ids are not a sequence. Ids from a sequence are handed out when a
transaction inserts, not when it commits: transaction A takes id 100,
transaction B takes 101 and commits first. A reader that has seen 101 and
asks for `id > 101` never sees 100. An event's id is instead its
transaction's id (xid8) shifted left by EVENT_ID_SHIFT bits, plus an
ordinal within the transaction (migration 0010). A reader hands out only
ids below HORIZON: the oldest transaction still running, shifted the same
way. Every transaction below it has finished (committed or rolled back)
and no new transaction can get an older xid, so nothing can ever appear
below the horizon again: `id > last` never skips anything. The price: an
event waits until every transaction that started writing before its own
has ended (a long write transaction in this database holds the stream
back; read-only transactions have no xid and hold nothing).

Ids stay below 2**53 (exact in JavaScript) until the server's xid8 passes
2**33, eight billion transactions.
"""

from __future__ import annotations

# Ids below this are final: no running transaction can still commit one.
# The oldest transaction running in this database bounds it (or, with none,
# the next xid to be handed out). Transactions of other databases on the
# same server can't write our table, so they don't hold the stream back:
# pg_stat_activity says which database an xid belongs to (for another
# role's sessions only with pg_read_all_stats; without it, every running
# xid counts, which is safe, only slower). An xid in the snapshot that has
# ended since counts too: its rows are committed but not in this snapshot.
# pg_current_snapshot() is the statement's own snapshot, so what the
# statement sees and the horizon agree.
HORIZON_CTE = """horizon AS MATERIALIZED (
    SELECT CAST(CAST(COALESCE(
               (SELECT min(x) FROM pg_snapshot_xip(s.snap) AS x
                WHERE NOT EXISTS (
                    SELECT 1 FROM pg_stat_activity a
                    WHERE a.backend_xid = xid(x)
                      AND a.datname IS DISTINCT FROM current_database())),
               pg_snapshot_xmax(s.snap)) AS text) AS bigint) << 20 AS id
    FROM (SELECT pg_current_snapshot() AS snap) s
)"""

_COLUMNS = "e.id, e.type, e.occurred_at, e.channel_id, e.chat_id, e.message_id, e.payload"

_FILTERS = """(CAST(:types AS text[]) IS NULL OR e.type = ANY(CAST(:types AS text[])))
      AND (CAST(:chat_id AS uuid) IS NULL OR e.chat_id = CAST(:chat_id AS uuid))"""

# A workspace's events after :after, oldest first, up to the horizon. One
# row at least: `horizon` comes with every row, and alone (NULL event
# columns) when nothing is there, so a filtered reader can move its cursor
# past events it doesn't want.
EVENTS_AFTER = f"""
WITH {HORIZON_CTE}
SELECT h.id AS horizon, {_COLUMNS}
FROM horizon h
LEFT JOIN LATERAL (
    SELECT {_COLUMNS}
    FROM outbox.events e
    WHERE e.workspace_id = :workspace_id
      AND e.id > CAST(:after AS bigint)
      AND e.id < h.id
      AND {_FILTERS}
    ORDER BY e.id
    LIMIT :limit
) e ON true
ORDER BY e.id
"""

# The stream's one reader per process (outbox/events/hub.py): the events of
# the workspaces someone is listening to, after the hub's cursor. `later`:
# committed events wait above the horizon (a transaction that started
# before theirs is still running), so the hub reads again soon even if no
# NOTIFY comes (that transaction may write no events).
LIVE_EVENTS = f"""
WITH {HORIZON_CTE}
SELECT h.id AS horizon,
       EXISTS (SELECT 1 FROM outbox.events x WHERE x.id >= h.id) AS later,
       e.workspace_id, {_COLUMNS}
FROM horizon h
LEFT JOIN LATERAL (
    SELECT e.workspace_id, {_COLUMNS}
    FROM outbox.events e
    WHERE e.id > CAST(:after AS bigint)
      AND e.id < h.id
      AND e.workspace_id = ANY(CAST(:workspace_ids AS text[]))
    ORDER BY e.id
    LIMIT :limit
) e ON true
ORDER BY e.id
"""

# Where a listener starts: everything below the horizon is history.
CURRENT_HORIZON = f"WITH {HORIZON_CTE} SELECT id FROM horizon"

# Pruning keeps the held ids one unbroken range: the oldest id held
# (OLDEST_EVENT) tells a client whether it missed pruned events, so
# nothing is deleted above an event that stays.
OLDEST_EVENT = "SELECT min(id) FROM outbox.events"
OLDEST_WORKSPACE_EVENT = "SELECT min(id) FROM outbox.events WHERE workspace_id = :workspace_id"

# --------------------------------------------------------------------------
# PRUNE: the oldest events past retention, a batch at a time, a prefix of
# the ids (the batch stops at the first event still young enough: ids
# follow transaction start, not commit, so a long transaction's events can
# sit among older ones). Below the horizon only: nothing can commit under
# what was deleted. Not past the status callbacks' fan-out cursor either
# (db/callback_queries.py FAN_OUT), while an endpoint is active: an event
# it hasn't reached yet would never be posted.
# --------------------------------------------------------------------------
PRUNE_EVENTS = f"""
WITH {HORIZON_CTE},
fanned_out AS MATERIALIZED (
    SELECT CASE WHEN EXISTS (SELECT 1 FROM outbox.webhook_endpoints WHERE status = 'active')
                THEN (SELECT last_event_id FROM outbox.webhook_fanout WHERE id = 1)
                ELSE 9223372036854775807 END AS id
),
batch AS MATERIALIZED (
    SELECT id, occurred_at
    FROM outbox.events
    WHERE id < (SELECT id FROM horizon)
      AND id <= (SELECT id FROM fanned_out)
    ORDER BY id
    LIMIT :limit
),
young AS (
    SELECT min(id) AS id FROM batch
    WHERE occurred_at >= now() - make_interval(secs => CAST(:older_than_seconds AS float8))
)
DELETE FROM outbox.events
WHERE id = ANY(ARRAY(
    SELECT id FROM batch
    WHERE id < COALESCE((SELECT id FROM young), 9223372036854775807)))
"""
