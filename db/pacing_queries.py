"""Pacing as the operator sees it: a channel's limits, set and shown with
today's usage, and what pacing holds back (docs/pacing.md).

The claim (db/queries.py CLAIM) spends the budget; these statements read
it through the same expression, PACING_BUDGET_NOW, so `outbox channel
limits`, `outbox status` and /metrics count exactly as the claim does.
Nothing here writes a budget column: an operator changes limits, the
claim alone spends.
"""

from __future__ import annotations

from outbox.db.queries import PACING_BUDGET_NOW

# A channel of the workspace (or of any workspace: NULL).
CHANNEL_FOR_LIMITS = """
SELECT c.id
FROM outbox.channels c
WHERE c.id = CAST(:channel_id AS uuid)
  AND (CAST(:workspace_id AS text) IS NULL OR c.workspace_id = CAST(:workspace_id AS text))
"""

# Whether PostgreSQL knows a time zone (the claim computes the channel's day
# with AT TIME ZONE, which would fail on an unknown name).
TIMEZONE_KNOWN = "SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = :name)"

# The channel's local day now: a warm-up set today starts from it.
LOCAL_TODAY = "SELECT CAST(now() AT TIME ZONE CAST(:timezone AS text) AS date)"

# Write a channel's limits (all of them: the service merged the change
# into what was set). The budget columns keep today's usage.
SET_LIMITS = """
INSERT INTO outbox.channel_pacing AS p (
    channel_id, per_second, burst, per_minute, per_day, new_chats_per_day, chat_gap_seconds,
    typing_time_seconds, timezone, warmup_start, warmup_factor, warmup_ceiling, warmup_from)
VALUES (CAST(:channel_id AS uuid), :per_second, :burst, :per_minute, :per_day,
        :new_chats_per_day, :chat_gap_seconds, :typing_time_seconds, :timezone,
        :warmup_start, :warmup_factor, :warmup_ceiling, :warmup_from)
ON CONFLICT (channel_id) DO UPDATE
SET per_second = EXCLUDED.per_second,
    burst = EXCLUDED.burst,
    per_minute = EXCLUDED.per_minute,
    per_day = EXCLUDED.per_day,
    new_chats_per_day = EXCLUDED.new_chats_per_day,
    chat_gap_seconds = EXCLUDED.chat_gap_seconds,
    typing_time_seconds = EXCLUDED.typing_time_seconds,
    timezone = EXCLUDED.timezone,
    warmup_start = EXCLUDED.warmup_start,
    warmup_factor = EXCLUDED.warmup_factor,
    warmup_ceiling = EXCLUDED.warmup_ceiling,
    warmup_from = EXCLUDED.warmup_from,
    updated_at = now()
"""

# A channel's limits and its budget as of now (no row: unlimited).
CHANNEL_PACING = """
SELECT b.channel_id, b.per_second, b.burst, b.per_minute, b.per_day, b.new_chats_per_day,
       b.chat_gap_seconds, b.typing_time_seconds, b.timezone, b.warmup_start,
       b.warmup_factor, b.warmup_ceiling, b.warmup_from, b.paced, n.*
FROM outbox.channel_pacing b
CROSS JOIN LATERAL (""" + PACING_BUDGET_NOW + """) n
WHERE b.channel_id = CAST(:channel_id AS uuid)
"""

# Paced channels (of a workspace, or all: NULL) with their budget now, and
# the due rows pacing holds back, as the claim would: all of them while the
# channel is out of budget; otherwise those of chats the chat checks stop
# (_CHAT_PASSES in db/queries.py): a new chat once the day's new chats are
# spent, a chat within its gap. Not counted: rows of a channel that is
# paused (those wait for the pause) and rows not yet due.
PACING_OVERVIEW = """
SELECT b.channel_id, n.rows_left, n.new_chats_left, n.day_used, n.day_cap, n.day_new_used,
       CASE
           WHEN n.rows_left = 0 THEN (
               SELECT count(*) FROM outbox.outbox_messages o
               WHERE o.channel_id = b.channel_id AND o.status = 'queued'
                 AND o.next_attempt_at <= now())
           WHEN n.new_chats_left = 0 OR b.chat_gap_seconds IS NOT NULL THEN (
               SELECT count(*) FROM outbox.outbox_messages o
               JOIN outbox.chats ch ON ch.id = o.chat_id
               WHERE o.channel_id = b.channel_id AND o.status = 'queued'
                 AND o.next_attempt_at <= now()
                 AND CASE WHEN ch.last_message_at IS NULL THEN n.new_chats_left = 0
                          ELSE b.chat_gap_seconds IS NOT NULL AND ch.last_message_at
                               > now() - make_interval(secs => b.chat_gap_seconds)
                     END)
           ELSE 0
       END AS held_back
FROM outbox.channel_pacing b
JOIN outbox.channels c ON c.id = b.channel_id
CROSS JOIN LATERAL (""" + PACING_BUDGET_NOW + """) n
WHERE b.paced
  AND (CAST(:workspace_id AS text) IS NULL OR c.workspace_id = CAST(:workspace_id AS text))
  AND c.status <> 'disabled'
  AND NOT (c.paused_until IS NOT NULL AND c.paused_until > now())
  AND NOT (c.status = 'paused' AND c.paused_until IS NULL)
"""
