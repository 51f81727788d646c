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

# --------------------------------------------------------------------------
# PROGRESS (`dispatch --once`): the rows due now, the bar's total.
# --------------------------------------------------------------------------
DUE_COUNT = """
SELECT count(*) FROM outbox.outbox_messages
WHERE status = 'queued' AND next_attempt_at <= now()
"""
