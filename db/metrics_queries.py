"""What the gauges read, as SQL, in one place (like db/queries.py).

`/metrics` reads the queue at scrape time, and the progress bar of
`dispatch --once` counts what is due: counts, cheap enough to run on every
scrape, never a scan of the `sent` rows.
"""

from __future__ import annotations

# --------------------------------------------------------------------------
# METRICS at scrape time. Only statuses with a partial index are counted
# (queued, sending, failed): `sent` rows are many and pruned anyway.
# --------------------------------------------------------------------------

# A scrape must never hang on a busy database: its statements give up after
# :milliseconds (local to the scrape's transaction).
SCRAPE_TIMEOUT = "SELECT set_config('statement_timeout', CAST(:milliseconds AS text), true)"

METRICS_QUEUE_DEPTH = """
SELECT channel_id, status, count(*) AS n
FROM outbox.outbox_messages
WHERE status IN ('queued', 'sending', 'failed')
GROUP BY channel_id, status
"""

METRICS_OLDEST_DUE = """
SELECT channel_id, EXTRACT(EPOCH FROM now() - min(next_attempt_at))::float8 AS seconds
FROM outbox.outbox_messages
WHERE status = 'queued' AND next_attempt_at <= now()
GROUP BY channel_id
"""

# Status webhooks waiting for their message's WhatsApp id (webhooks/apply.py).
METRICS_STATUS_BACKLOG = "SELECT count(*) FROM outbox.webhook_status_backlog"

# Status callbacks not yet delivered (the partial indexes on pending and
# delivering rows), and endpoints that stopped.
METRICS_CALLBACKS_WAITING = """
SELECT 'pending' AS status, count(*) AS n
FROM outbox.webhook_deliveries WHERE status = 'pending'
UNION ALL
SELECT 'delivering', count(*)
FROM outbox.webhook_deliveries WHERE status = 'delivering'
"""

METRICS_ENDPOINTS_DISABLED = """
SELECT count(*) FROM outbox.webhook_endpoints WHERE status = 'disabled'
"""

# --------------------------------------------------------------------------
# THROUGHPUT (the console's chart, GET /v1/stats/throughput): per channel
# and minute since :since, what was sent, put back for another attempt, and
# failed for good. Each part reads a partial index's rows only (sent_at of
# sent rows; failed rows; queued rows), never the whole table.
# --------------------------------------------------------------------------
THROUGHPUT = """
SELECT channel_id, date_trunc('minute', sent_at) AS minute, 'sent' AS what, count(*) AS n
FROM outbox.outbox_messages
WHERE workspace_id = :workspace_id AND status = 'sent' AND sent_at >= :since
GROUP BY 1, 2
UNION ALL
SELECT channel_id, date_trunc('minute', updated_at), 'failed', count(*)
FROM outbox.outbox_messages
WHERE workspace_id = :workspace_id AND status = 'failed' AND updated_at >= :since
GROUP BY 1, 2
UNION ALL
SELECT channel_id, date_trunc('minute', updated_at), 'retried', count(*)
FROM outbox.outbox_messages
WHERE workspace_id = :workspace_id AND status = 'queued' AND attempts > 0
  AND updated_at >= :since
GROUP BY 1, 2
"""

# QUEUE DEPTH over the same window, rebuilt from the rows' own times (no
# history table): a row is in the queue from its created_at until it
# leaves, at sent_at when sent, at updated_at when it failed for good or
# was cancelled; queued and sending rows are still in it. Each row's
# arrival (+1) and departure (-1), summed per minute from :since (moves
# before it count in the first minute): the running sum is the depth at each
# minute's end. Reads the open rows and those that left since :since, each
# part through a partial index like THROUGHPUT. A retried dead letter counts
# as queued since it was first queued (its time as a dead letter is not kept).
QUEUE_DEPTH_MOVES = """
WITH spans AS (
    SELECT created_at AS came, CAST(NULL AS timestamptz) AS went
    FROM outbox.outbox_messages
    WHERE workspace_id = :workspace_id AND status IN ('queued', 'sending')
    UNION ALL
    SELECT created_at, sent_at
    FROM outbox.outbox_messages
    WHERE workspace_id = :workspace_id AND status = 'sent' AND sent_at >= :since
    UNION ALL
    SELECT created_at, updated_at
    FROM outbox.outbox_messages
    WHERE workspace_id = :workspace_id AND status = 'failed' AND updated_at >= :since
    UNION ALL
    SELECT created_at, updated_at
    FROM outbox.outbox_messages
    WHERE workspace_id = :workspace_id AND status = 'cancelled' AND updated_at >= :since
),
moves AS (
    SELECT came AS at, 1 AS n FROM spans
    UNION ALL
    SELECT went, -1 FROM spans WHERE went IS NOT NULL
)
SELECT date_trunc('minute', GREATEST(at, CAST(:since AS timestamptz))) AS minute, sum(n) AS n
FROM moves
GROUP BY 1
"""
