"""Every hot-path statement, as SQL, in one place.

Read this file top to bottom to know what the queue does to the database:
enqueue, claim, complete, release, rescue, pause, prune. Parameters are
named (`:name`) and always bound, never formatted in. Arrays carry batches
so that one statement (one round trip) handles a whole batch.
"""

from __future__ import annotations

# --------------------------------------------------------------------------
# ENQUEUE: contacts, chats, messages and outbox rows for a batch of messages,
# inside the caller's transaction, in one round trip.
#
# * All-or-nothing on channels: if any channel is unknown (or belongs to
#   another workspace) or disabled, `input` is empty and nothing is written;
#   the caller then asks CHANNELS_FOR_ENQUEUE which one and raises.
# * Idempotency: a key the channel has already seen returns the existing
#   message (`existing`); a concurrent insert of the same key makes ON
#   CONFLICT skip, and the row comes back with a NULL message_id: the caller
#   re-runs that row in a new statement, whose snapshot sees the winner.
# * Get-or-create contact and chat without UPDATE: no row locks on hot
#   chats, no dead tuples. The same snapshot rule applies (NULL → re-run).
# * NOTIFY is transactional: the dispatcher wakes only if the caller commits.
# * :trace_context: the enqueuing span's W3C trace context (JSON) when
#   OpenTelemetry traces, else NULL; one per call (outbox/tracing.py).
# * Each new message's `message.queued` event is written by the same
#   statement (data-modifying CTEs run whether or not they are referenced).
# --------------------------------------------------------------------------
ENQUEUE = """
WITH channel AS (
    SELECT id, workspace_id
    FROM outbox.channels
    WHERE id = ANY(CAST(:channel_ids AS uuid[]))
      AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
      AND status <> 'disabled'
),
input AS (
    SELECT t.*, channel.workspace_id
    FROM unnest(
        CAST(:ords AS int[]), CAST(:message_ids AS uuid[]), CAST(:row_channel_ids AS uuid[]),
        CAST(:phones AS text[]), CAST(:wa_chat_ids AS text[]), CAST(:is_groups AS bool[]),
        CAST(:types AS text[]), CAST(:bodies AS text[]), CAST(:payloads AS jsonb[]),
        CAST(:keys AS text[]), CAST(:priorities AS int[]), CAST(:send_ats AS timestamptz[])
    ) AS t(ord, message_id, channel_id, phone, wa_chat_id, is_group,
           message_type, body, payload, idempotency_key, priority, send_at)
    JOIN channel ON channel.id = t.channel_id
    WHERE (SELECT count(*) FROM channel) = CAST(:channel_count AS int)
),
existing AS (
    -- Keys the channel has seen: one index probe per keyed row. LATERAL with
    -- LIMIT is never flattened into a join, so it stays a probe even with
    -- nested loops off (see outbox/enqueue.py) and never scans `messages`.
    SELECT i.ord, m.id AS message_id, m.chat_id
    FROM input i
    CROSS JOIN LATERAL (
        SELECT m.id, m.chat_id FROM outbox.messages m
        WHERE m.channel_id = i.channel_id AND m.idempotency_key = i.idempotency_key
        LIMIT 1
    ) m
    WHERE i.idempotency_key IS NOT NULL
),
fresh AS (
    SELECT i.* FROM input i WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.ord = i.ord)
),
-- Chats, then contacts: look up (index probes), insert only the missing ones.
-- Inserting known rows ON CONFLICT DO NOTHING would cost a speculative
-- insertion each, and most messages go to known chats. A known chat has its
-- contact already, so only the rows without one look up contacts.
known_chats AS (
    SELECT f.channel_id, f.wa_chat_id, c.id
    FROM (SELECT DISTINCT channel_id, wa_chat_id FROM fresh) f
    CROSS JOIN LATERAL (
        SELECT c.id FROM outbox.chats c
        WHERE c.channel_id = f.channel_id AND c.wa_chat_id = f.wa_chat_id
        LIMIT 1
    ) c
),
chatless AS (
    SELECT f.* FROM fresh f
    WHERE NOT EXISTS (SELECT 1 FROM known_chats k
                      WHERE k.channel_id = f.channel_id AND k.wa_chat_id = f.wa_chat_id)
),
known_contacts AS (
    SELECT f.workspace_id, f.phone, c.id
    FROM (SELECT DISTINCT workspace_id, phone FROM chatless) f
    CROSS JOIN LATERAL (
        SELECT c.id FROM outbox.contacts c
        WHERE c.workspace_id = f.workspace_id AND c.phone = f.phone
        LIMIT 1
    ) c
),
new_contacts AS (
    INSERT INTO outbox.contacts (workspace_id, phone, is_group)
    SELECT DISTINCT f.workspace_id, f.phone, f.is_group
    FROM chatless f
    WHERE NOT EXISTS (SELECT 1 FROM known_contacts k
                      WHERE k.workspace_id = f.workspace_id AND k.phone = f.phone)
    ON CONFLICT (workspace_id, phone) DO NOTHING
    RETURNING id, workspace_id, phone
),
contact_ids AS (
    SELECT id, workspace_id, phone FROM new_contacts
    UNION ALL
    SELECT id, workspace_id, phone FROM known_contacts
),
new_chats AS (
    INSERT INTO outbox.chats (workspace_id, channel_id, wa_chat_id, contact_id)
    SELECT DISTINCT ON (f.channel_id, f.wa_chat_id)
           f.workspace_id, f.channel_id, f.wa_chat_id, ci.id
    FROM chatless f
    JOIN contact_ids ci ON ci.workspace_id = f.workspace_id AND ci.phone = f.phone
    ON CONFLICT (channel_id, wa_chat_id) DO NOTHING
    RETURNING id, channel_id, wa_chat_id
),
chat_ids AS (
    SELECT id, channel_id, wa_chat_id FROM new_chats
    UNION ALL
    SELECT id, channel_id, wa_chat_id FROM known_chats
),
new_messages AS (
    INSERT INTO outbox.messages (id, workspace_id, channel_id, chat_id, direction, type, body,
                          payload, status, idempotency_key)
    SELECT f.message_id, f.workspace_id, f.channel_id, ch.id, 'outbound', f.message_type,
           f.body, f.payload, 'pending', f.idempotency_key
    FROM fresh f
    JOIN chat_ids ch ON ch.channel_id = f.channel_id AND ch.wa_chat_id = f.wa_chat_id
    ORDER BY f.ord
    ON CONFLICT (channel_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING id, chat_id
),
new_outbox AS (
    -- ORDER BY ord: ids follow the caller's order, and per-chat order is by id.
    INSERT INTO outbox.outbox_messages (workspace_id, message_id, channel_id, chat_id, recipient,
                                 message_type, payload, priority, next_attempt_at,
                                 max_attempts, idempotency_key, trace_context)
    SELECT f.workspace_id, nm.id, f.channel_id, nm.chat_id, f.wa_chat_id, f.message_type,
           f.payload, f.priority, COALESCE(f.send_at, now()),
           CAST(:max_attempts AS int), f.idempotency_key, CAST(:trace_context AS jsonb)
    FROM new_messages nm
    JOIN fresh f ON f.message_id = nm.id
    ORDER BY f.ord
    RETURNING id, message_id, chat_id, workspace_id, channel_id, message_type, idempotency_key
),
queued_events AS (
    -- message.queued, in the statement that queues (db/event_queries.py)
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, message_id, payload)
    SELECT outbox.next_event_id(), nob.workspace_id, 'message.queued', nob.channel_id,
           nob.chat_id, nob.message_id,
           jsonb_strip_nulls(jsonb_build_object('type', nob.message_type,
                                                'idempotency_key', nob.idempotency_key))
    FROM new_outbox nob
),
notify AS (
    SELECT pg_notify('outbox_enqueued', '') AS n WHERE EXISTS (SELECT 1 FROM new_outbox)
)
-- One row per fact, no joins between RETURNING sets: the planner can't
-- estimate their size (it guesses 1 row) and a nested loop over two of them
-- is quadratic. The caller maps rows back through the message ids it chose.
SELECT 'outbox' AS kind, nob.message_id, nob.id AS outbox_id, nob.chat_id, NULL::int AS ord,
       NULL::text AS phone, NULL::text AS workspace_id
FROM new_outbox nob
UNION ALL
SELECT 'existing', e.message_id, old_ob.id, e.chat_id, e.ord, NULL, NULL
FROM existing e
LEFT JOIN LATERAL (
    SELECT ob.id FROM outbox.outbox_messages ob WHERE ob.message_id = e.message_id LIMIT 1
) old_ob ON true
UNION ALL
SELECT 'chat', NULL, NULL, id, NULL, NULL, NULL FROM new_chats
UNION ALL
SELECT 'contact', NULL, NULL, NULL, NULL, phone, workspace_id FROM new_contacts
UNION ALL
SELECT 'notify', NULL, NULL, NULL, NULL, NULL, NULL FROM notify
"""

# Why an enqueue wrote nothing: which channels are missing or disabled.
CHANNELS_FOR_ENQUEUE = """
SELECT id, status
FROM outbox.channels
WHERE id = ANY(CAST(:channel_ids AS uuid[]))
  AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
"""

# --------------------------------------------------------------------------
# PACING (docs/pacing.md): a paced channel's budget as of now(), from its
# channel_pacing row `b`. Shared by CLAIM (which then spends it) and the
# operator's views (db/pacing_queries.py), so both count alike.
#
# * Windows never go back: a claim that started a moment before another one
#   committed (now() is the statement's start) counts in the later window,
#   and its bucket refills from the later time. A budget is only ever
#   under-spent, never over.
# * tokens: a token bucket `burst` deep refilled at `per_second` (NULL
#   tokens: full). minute: the clock minute; day: the day in the channel's
#   time zone. day_cap: per_day, and the warm-up's
#   warmup_start * warmup_factor ** days, up to warmup_ceiling (in log space:
#   a long-running warm-up must not overflow float8).
# * new_chats_cap: new_chats_per_day, grown by the warm-up too: scaled by
#   the warm-up's cap today over its ceiling, rounded up (a positive cap
#   opens at least one chat a day), so it reaches new_chats_per_day the day
#   the warm-up reaches its ceiling. (The lower of the two caps would change
#   nothing: every new chat already costs a message of the day's cap.)
# * rows_left: rows a claim may take now (NULL: no row limit);
#   new_chats_left likewise for first messages to chats that never wrote.
# --------------------------------------------------------------------------
PACING_BUDGET_NOW = """
SELECT w.day, w.minute, w.tokens, w.minute_used, w.day_used, w.day_new_used, caps.day_cap,
       caps.new_chats_cap,
       -- (GREATEST skips NULLs: GREATEST(0, NULL) would be 0, a limit)
       CASE WHEN r.rows_left IS NOT NULL THEN CAST(GREATEST(0, r.rows_left) AS bigint)
       END AS rows_left,
       CASE WHEN r.new_chats_left IS NOT NULL THEN GREATEST(0, r.new_chats_left)
       END AS new_chats_left
FROM (
    SELECT d.day, d.minute,
           CASE WHEN b.per_second IS NOT NULL THEN
               LEAST(CAST(b.burst AS float8),
                     COALESCE(b.tokens, b.burst) + b.per_second * GREATEST(0, CAST(EXTRACT(
                         EPOCH FROM now() - COALESCE(b.refilled_at, now())) AS float8)))
           END AS tokens,
           CASE WHEN b.minute_start = d.minute THEN b.minute_count ELSE 0 END AS minute_used,
           CASE WHEN b.day = d.day THEN b.day_count ELSE 0 END AS day_used,
           CASE WHEN b.day = d.day THEN b.day_new_chats ELSE 0 END AS day_new_used,
           CASE WHEN b.warmup_start IS NOT NULL THEN LEAST(
               CAST(b.warmup_ceiling AS float8),
               floor(exp(LEAST(700, ln(b.warmup_start) + ln(b.warmup_factor)
                                    * GREATEST(0, d.day - b.warmup_from)))
                     + 1e-9))  -- exp(ln(50)) is 49.99999...
           END AS warmup_cap
    FROM (SELECT GREATEST(b.day, CAST(now() AT TIME ZONE b.timezone AS date)) AS day,
                 GREATEST(b.minute_start, date_trunc('minute', now())) AS minute) d
) w
CROSS JOIN LATERAL (
    SELECT LEAST(CAST(b.per_day AS float8), w.warmup_cap) AS day_cap,
           CASE WHEN w.warmup_cap IS NOT NULL THEN CAST(ceil(
                    b.new_chats_per_day * w.warmup_cap / b.warmup_ceiling - 1e-9) AS bigint)
                ELSE b.new_chats_per_day END AS new_chats_cap
) caps
CROSS JOIN LATERAL (
    SELECT LEAST(floor(w.tokens), b.per_minute - w.minute_used, caps.day_cap - w.day_used)
               AS rows_left,
           caps.new_chats_cap - w.day_new_used AS new_chats_left
) r
"""

# A row's chat passes pacing's chat checks (channels whose `rc.chat_checks`
# limit chats): a new chat only while the day has new chats left, and the
# chat's gap since its latest message. A scalar subquery under CASE: one
# primary-key probe, and only on channels that check chats.
_CHAT_PASSES = """CASE WHEN rc.chat_checks THEN (
    SELECT (ch.last_message_at IS NOT NULL OR COALESCE(rc.new_chats_left, 1) > 0)
           AND (ch.last_message_at IS NULL OR rc.chat_gap_seconds IS NULL
                OR ch.last_message_at <= now() - make_interval(secs => rc.chat_gap_seconds))
    FROM outbox.chats ch WHERE ch.id = {row}.chat_id)
ELSE true END"""

# --------------------------------------------------------------------------
# CLAIM: take a batch of due rows for this worker, fairly across channels,
# keeping each chat's order, within each channel's pacing budget. Committed
# before any HTTP request.
#
# * Channels first: the ones that may send now (active, or a timed pause
#   that has run out), in random order so that when the batch can't fit
#   every channel, no channel is always last.
# * Pacing, fleet-wide: a paced channel's budget row is locked for the
#   statement (SKIP LOCKED: a channel whose budget another claim is spending
#   right now is skipped, like a busy chat), read as committed (a locked
#   row is its latest version, whatever the snapshot), and spent below in
#   the same statement: dispatchers together never take more than it
#   allows. A channel out of budget is skipped like a paused one; its rows
#   keep their attempts and their order. Unpaced channels lock nothing.
# * Per channel, at most :per_channel rows (LATERAL + LIMIT), and no more
#   than its budget: a channel with a million queued rows gets the same
#   share of a batch as one with ten.
# * Bounded work per channel, whatever is queued: the scan looks at the
#   first 4 * :per_channel + 64 due rows only. A chat with a long backlog
#   behind a row in flight (all of it held back by head-of-line) used to
#   be walked row by row on every claim (100,000 rows: ~0.4 s). A channel
#   the bound leaves short gets the first unfinished row of other chats
#   instead, from a walk over chats (`chat_walk`: one index probe per chat,
#   from a random one), so the chats behind that backlog still go.
# * Head-of-line per chat: a row waits while an earlier row of its chat is
#   sending, waiting for a retry (attempts > 0), or due now. Rows of other
#   chats pass freely, and so does a row whose predecessor is scheduled for
#   later (send_at).
# * Chats, only on channels that limit them: the chat gap counts from the
#   chat's latest message (ours is recorded when its send is: the next one
#   can't be claimed before; theirs counts too); a new chat (no message
#   either way yet) passes only while the day has new chats left, and at
#   most that many per claim (`chosen`).
# * The UPDATE takes ids through = ANY(ARRAY(...)): primary-key lookups
#   whatever the planner thinks of the candidate count (a join could turn
#   into a sequential scan of the whole table).
# * SKIP LOCKED: concurrent workers never block on each other's candidates.
#   A skipped (locked) row is still 'queued' in our snapshot, so the
#   head-of-line test also holds back the rows behind it.
# * MATERIALIZED: each set is computed once, never re-planned into the
#   UPDATE (where it could be evaluated more than once).
# * The claim spends an attempt; `send_started_at` stays NULL until the
#   row's request is about to start (MARK_SENDS_STARTED), so the rescuer can
#   give the attempt back if the worker dies before that. Budget is spent
#   at the claim and never given back (a failed send may have gone out).
# * A channel's typing_time default joins a text's payload unless it has one.
# --------------------------------------------------------------------------
CLAIM = """
WITH RECURSIVE ready_channels AS MATERIALIZED (
    SELECT c.id, p.paced IS TRUE AS paced, p.typing_time_seconds,
           row_number() OVER (ORDER BY random()) AS ord
    FROM outbox.channels c
    LEFT JOIN outbox.channel_pacing p ON p.channel_id = c.id
    WHERE (c.status = 'active' OR (c.status = 'paused' AND c.paused_until IS NOT NULL))
      AND (c.paused_until IS NULL OR c.paused_until <= now())
),
budget AS MATERIALIZED (
    SELECT b.channel_id, b.per_minute, b.chat_gap_seconds, n.*
    FROM (
        -- Only budgets worth locking (a row lock is a write): channels with
        -- due rows, and budget left as of the snapshot. A stale snapshot
        -- can only show more budget than there is (claims spend it, time
        -- refills it the same for both), so it never skips a channel with
        -- budget. Locked, the row is re-read and these conditions rechecked.
        SELECT b.*
        FROM outbox.channel_pacing b
        CROSS JOIN LATERAL (""" + PACING_BUDGET_NOW + """) pre
        WHERE b.paced AND b.channel_id IN (SELECT id FROM ready_channels WHERE paced)
          AND COALESCE(pre.rows_left, 1) > 0
          AND EXISTS (SELECT 1 FROM outbox.outbox_messages o
                      WHERE o.channel_id = b.channel_id AND o.status = 'queued'
                        AND o.next_attempt_at <= now())
        FOR NO KEY UPDATE OF b SKIP LOCKED
    ) b
    CROSS JOIN LATERAL (""" + PACING_BUDGET_NOW + """) n
),
channels AS MATERIALIZED (
    SELECT rc.id, rc.ord, b.rows_left, b.new_chats_left, b.chat_gap_seconds,
           (b.new_chats_left IS NOT NULL OR b.chat_gap_seconds IS NOT NULL) AS chat_checks
    FROM ready_channels rc
    LEFT JOIN budget b ON b.channel_id = rc.id
    WHERE NOT rc.paced OR (b.channel_id IS NOT NULL AND COALESCE(b.rows_left, 1) > 0)
    ORDER BY rc.ord
),
candidates AS MATERIALIZED (
    SELECT o.id, o.channel_id, o.priority, o.next_attempt_at, o.new_chat
    FROM channels rc
    CROSS JOIN LATERAL (
        SELECT o.id, o.channel_id, o.priority, o.next_attempt_at,
               CASE WHEN rc.new_chats_left IS NOT NULL THEN (
                   SELECT ch.last_message_at IS NULL FROM outbox.chats ch WHERE ch.id = o.chat_id)
               ELSE false END AS new_chat
        FROM (
            -- At most 4 * :per_channel + 64 due rows, unlocked: what one
            -- claim looks at on a channel, however long a blocked chat's
            -- backlog ahead of the rest (rows beyond: `sampled`).
            SELECT d.ctid AS tid, d.priority, d.next_attempt_at, d.id
            FROM outbox.outbox_messages d
            WHERE d.channel_id = rc.id
              AND d.status = 'queued'
              AND d.next_attempt_at <= now()
            ORDER BY d.priority DESC, d.next_attempt_at, d.id
            LIMIT 4 * :per_channel + 64
        ) d
        -- Back to the row by its address (no second index probe); locked
        -- below, it is re-read as committed if it changed meanwhile.
        JOIN outbox.outbox_messages o ON o.ctid = d.tid
        WHERE o.status = 'queued'
          AND NOT EXISTS (
              SELECT 1
              FROM outbox.outbox_messages e
              WHERE e.chat_id = o.chat_id
                AND e.id < o.id
                AND e.status IN ('queued', 'sending')
                AND (e.status = 'sending' OR e.attempts > 0 OR e.next_attempt_at <= now())
          )
          -- (not an EXISTS: it may be planned as a hashed subplan, a scan
          -- of every chat)
          AND """ + _CHAT_PASSES.format(row="o") + """
        ORDER BY d.priority DESC, d.next_attempt_at, d.id
        LIMIT LEAST(:per_channel, rc.rows_left)
        FOR NO KEY UPDATE OF o SKIP LOCKED
    ) o
    LIMIT :batch_size
),
-- Channels whose bounded scan came back short although it was full: their
-- due rows go on beyond it, behind chats that hold them back. (Channels the
-- scan never reached, the batch being full, are not cut short.)
cut_short AS MATERIALIZED (
    SELECT rc.id
    FROM channels rc
    WHERE ((SELECT count(*) FROM candidates k) < :batch_size
           OR rc.ord <= (SELECT max(c.ord) FROM candidates k
                         JOIN channels c ON c.id = k.channel_id))
      AND (SELECT count(*) FROM candidates k WHERE k.channel_id = rc.id)
          < LEAST(:per_channel, rc.rows_left)
      AND EXISTS (
          SELECT 1 FROM outbox.outbox_messages d
          WHERE d.channel_id = rc.id AND d.status = 'queued' AND d.next_attempt_at <= now()
          ORDER BY d.priority DESC, d.next_attempt_at, d.id
          OFFSET 4 * :per_channel + 64 LIMIT 1)
),
-- Their rows beyond the scan: the first unfinished row of up to 256 chats,
-- walked in chat id order from a random chat, round to where it started
-- (one index probe per chat, however long its backlog), taken when it is
-- theirs, queued and due. A chat's first unfinished row has nothing ahead
-- of it: it passes head-of-line.
walk_start AS MATERIALIZED (
    SELECT gen_random_uuid() AS chat_id  -- once: an index bound, not a filter per row
),
chat_walk AS (
    SELECT 1 AS step, f.chat_id, f.chat_id AS first_chat, false AS wrapped
    FROM (SELECT COALESCE(
              (SELECT e.chat_id FROM outbox.outbox_messages e
               WHERE e.status IN ('queued', 'sending')
                 AND e.chat_id >= (SELECT chat_id FROM walk_start)
               ORDER BY e.chat_id LIMIT 1),
              (SELECT e.chat_id FROM outbox.outbox_messages e
               WHERE e.status IN ('queued', 'sending') ORDER BY e.chat_id LIMIT 1)) AS chat_id
         ) f
    WHERE f.chat_id IS NOT NULL AND EXISTS (SELECT 1 FROM cut_short)
    UNION ALL
    SELECT w.step + 1, COALESCE(n.next, (
               SELECT e.chat_id FROM outbox.outbox_messages e
               WHERE e.status IN ('queued', 'sending') ORDER BY e.chat_id LIMIT 1)),
           w.first_chat, w.wrapped OR n.next IS NULL
    FROM chat_walk w
    CROSS JOIN LATERAL (
        SELECT (SELECT e.chat_id FROM outbox.outbox_messages e
                WHERE e.status IN ('queued', 'sending') AND e.chat_id > w.chat_id
                ORDER BY e.chat_id LIMIT 1) AS next
    ) n
    WHERE w.step < 256
      AND NOT (w.wrapped AND n.next >= w.first_chat)  -- round once
      AND NOT (w.wrapped AND n.next IS NULL)
      AND NOT (NOT w.wrapped AND n.next IS NULL AND w.first_chat = (
               SELECT e.chat_id FROM outbox.outbox_messages e
               WHERE e.status IN ('queued', 'sending') ORDER BY e.chat_id LIMIT 1))
),
sampled AS MATERIALIZED (
    SELECT h.id, h.channel_id, h.priority, h.next_attempt_at,
           CASE WHEN rc.new_chats_left IS NOT NULL THEN (
               SELECT ch.last_message_at IS NULL FROM outbox.chats ch WHERE ch.id = h.chat_id)
           ELSE false END AS new_chat
    FROM chat_walk w
    CROSS JOIN LATERAL (
        SELECT e.id, e.channel_id, e.chat_id, e.status, e.priority, e.next_attempt_at
        FROM outbox.outbox_messages e
        WHERE e.chat_id = w.chat_id AND e.status IN ('queued', 'sending')
        ORDER BY e.id
        LIMIT 1
    ) h
    JOIN cut_short cs ON cs.id = h.channel_id
    JOIN channels rc ON rc.id = h.channel_id
    WHERE h.status = 'queued' AND h.next_attempt_at <= now()
      AND h.id NOT IN (SELECT id FROM candidates)
      AND """ + _CHAT_PASSES.format(row="h") + """
),
sampled_locked AS MATERIALIZED (
    SELECT o.id
    FROM outbox.outbox_messages o
    WHERE o.id = ANY(ARRAY(SELECT id FROM sampled)) AND o.status = 'queued'
    FOR NO KEY UPDATE SKIP LOCKED
),
-- Per channel, the scan's rows first, then the sampled ones, up to the
-- channel's share and budget; new chats up to the day's allowance. When
-- they exceed the batch, each channel's first rows come first.
chosen AS MATERIALIZED (
    SELECT k.id, k.channel_id, k.new_chat
    FROM (
        SELECT k.*,
               row_number() OVER w AS rank,
               count(*) FILTER (WHERE k.new_chat) OVER w AS new_rank
        FROM (
            SELECT id, channel_id, priority, next_attempt_at, new_chat, 0 AS src
            FROM candidates
            UNION ALL
            SELECT id, channel_id, priority, next_attempt_at, new_chat, 1
            FROM sampled WHERE id IN (SELECT id FROM sampled_locked)
        ) k
        WINDOW w AS (PARTITION BY k.channel_id
                     ORDER BY k.src, k.priority DESC, k.next_attempt_at, k.id)
    ) k
    JOIN channels rc ON rc.id = k.channel_id
    WHERE k.rank <= LEAST(:per_channel, rc.rows_left)
      AND (NOT k.new_chat OR k.new_rank <= rc.new_chats_left)
    ORDER BY k.rank, k.src, rc.ord
    LIMIT :batch_size
),
claimed AS (
    UPDATE outbox.outbox_messages o
    SET status = 'sending',
        attempts = o.attempts + 1,
        claim_token = :claim_token,
        locked_until = now() + make_interval(secs => :lease_seconds),
        send_started_at = NULL,
        updated_at = now()
    WHERE o.id = ANY(ARRAY(SELECT id FROM chosen))
    RETURNING o.id, o.message_id, o.channel_id, o.chat_id, o.recipient, o.message_type,
              o.payload, o.attempts, o.max_attempts
),
spent AS (
    UPDATE outbox.channel_pacing p
    SET tokens = b.tokens - s.n,
        refilled_at = GREATEST(p.refilled_at, now()),
        minute_start = b.minute,
        minute_count = b.minute_used + s.n,
        day = b.day,
        day_count = b.day_used + s.n,
        day_new_chats = b.day_new_used + s.new_chats
    FROM (SELECT c.channel_id, count(*) AS n, count(*) FILTER (WHERE k.new_chat) AS new_chats
          FROM claimed c JOIN chosen k ON k.id = c.id
          GROUP BY c.channel_id) s
    JOIN budget b ON b.channel_id = s.channel_id
    WHERE p.channel_id = s.channel_id
    RETURNING p.channel_id
)
SELECT c.id, c.message_id, c.channel_id, c.chat_id, c.recipient, c.message_type,
       CASE WHEN rc.typing_time_seconds IS NOT NULL AND c.message_type = 'text'
                 AND c.payload -> 'typing_time' IS NULL
            THEN c.payload || jsonb_build_object('typing_time', rc.typing_time_seconds)
            ELSE c.payload END AS payload,
       c.attempts, c.max_attempts
FROM claimed c
JOIN ready_channels rc ON rc.id = c.channel_id
"""

# These claimed rows' requests are about to start: committed before they
# go out, many rows per statement (outbox/dispatch/starts.py). Guarded by
# the claim: a row rescued meanwhile is left alone. No updated_at: a column
# no index covers, so the new row version is a HOT update.
MARK_SENDS_STARTED = """
UPDATE outbox.outbox_messages
SET send_started_at = now()
WHERE id = ANY(CAST(:ids AS bigint[]))
  AND claim_token = ANY(CAST(:claim_tokens AS uuid[]))
  AND status = 'sending'
"""

# The enqueue trace contexts of rows just claimed, read only while tracing
# (outbox/tracing.py): a primary-key probe per row, after the claim commits.
TRACE_CONTEXTS = """
SELECT id, trace_context
FROM outbox.outbox_messages
WHERE id = ANY(CAST(:ids AS bigint[])) AND trace_context IS NOT NULL
"""

# Channels the dispatcher will soon send on (they have queued rows): their
# tokens are decrypted together at start-up. The EXISTS is one probe of
# ix_outbox_due per channel.
CHANNELS_WITH_QUEUED = """
SELECT c.id
FROM outbox.channels c
WHERE (c.status = 'active' OR (c.status = 'paused' AND c.paused_until IS NOT NULL))
  AND EXISTS (
      SELECT 1 FROM outbox.outbox_messages o WHERE o.channel_id = c.id AND o.status = 'queued'
  )
LIMIT :limit
"""

# The rows due now: `dispatch --once`'s progress bar total.
DUE_COUNT = """
SELECT count(*) FROM outbox.outbox_messages
WHERE status = 'queued' AND next_attempt_at <= now()
"""

# Channel details the dispatcher needs to send (cached per channel).
CHANNEL_CREDENTIALS = """
SELECT c.id, c.workspace_id, c.base_url, c.status, t.encrypted_token, t.key_id
FROM outbox.channels c
LEFT JOIN outbox.channel_tokens t ON t.channel_id = c.id
WHERE c.id = ANY(CAST(:channel_ids AS uuid[]))
"""

# --------------------------------------------------------------------------
# COMPLETE: apply a batch of decisions in one statement.
#
# Guarded by claim token and status: a row rescued after its lease ran out
# (and maybe claimed again) no longer matches, so a late completion changes
# nothing; likewise a rescue never touches a row completed in time.
# The message row follows the outbox row (sent with its WhatsApp id, or
# failed with the reason), with its event; the chat shows its latest sent
# message; a send that went through clears the channel's rate-limit strikes.
# --------------------------------------------------------------------------
COMPLETE = """
WITH d AS (
    SELECT *
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:claim_tokens AS uuid[]), CAST(:statuses AS text[]),
        CAST(:refunds AS int[]), CAST(:delays AS float8[]), CAST(:errors AS text[]),
        CAST(:wa_message_ids AS text[])
    ) AS d(id, claim_token, status, refund, delay_seconds, error, wa_message_id)
),
done AS (
    UPDATE outbox.outbox_messages o
    SET status = d.status,
        attempts = o.attempts - d.refund,
        -- A retry waits its backoff; a released row (429, channel problem,
        -- shutdown) keeps its time, and so its place in its chat's order.
        next_attempt_at = CASE WHEN d.status = 'queued' AND d.refund = 0
                               THEN now() + make_interval(secs => d.delay_seconds)
                               ELSE o.next_attempt_at END,
        last_error = COALESCE(d.error, o.last_error),
        claim_token = NULL,
        locked_until = NULL,
        sent_at = CASE WHEN d.status = 'sent' THEN now() END,
        updated_at = now()
    FROM d
    WHERE o.id = d.id AND o.claim_token = d.claim_token AND o.status = 'sending'
    RETURNING o.id, o.message_id, o.chat_id, o.channel_id, o.status, o.message_type,
              o.payload, d.error, d.wa_message_id
),
msg AS (
    UPDATE outbox.messages m
    SET status = CASE WHEN done.status = 'sent' THEN 'sent' ELSE 'failed' END,
        wa_message_id = done.wa_message_id,
        error = CASE WHEN done.status = 'failed' THEN done.error END,
        sent_at = CASE WHEN done.status = 'sent' THEN now() END,
        updated_at = now()
    FROM done
    WHERE m.id = done.message_id AND done.status IN ('sent', 'failed') AND m.status = 'pending'
    RETURNING m.id, m.workspace_id, m.channel_id, m.chat_id, m.status, m.error, m.wa_message_id
),
msg_events AS (
    -- message.sent / message.failed for the messages that moved: the
    -- events cost no round trip of their own (db/event_queries.py).
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, message_id, payload)
    SELECT outbox.next_event_id(), msg.workspace_id, 'message.' || msg.status, msg.channel_id,
           msg.chat_id, msg.id,
           CASE WHEN msg.status = 'sent' THEN jsonb_build_object('wa_message_id', msg.wa_message_id)
                ELSE jsonb_build_object('error', msg.error) END
    FROM msg
),
chat AS (
    UPDATE outbox.chats c
    SET last_message_at = now(),
        last_message_preview = left(x.preview, 100),
        updated_at = now()
    FROM (
        SELECT DISTINCT ON (chat_id) chat_id,
               COALESCE(payload->>'body', payload->>'caption',
                        '[' || message_type || ']') AS preview
        FROM done
        WHERE status = 'sent' AND message_type <> 'read'  -- a read receipt is no message
        ORDER BY chat_id, id DESC
    ) x
    WHERE c.id = x.chat_id
    RETURNING c.id
),
strikes AS (
    UPDATE outbox.channels ch
    SET rate_limit_strikes = 0
    WHERE ch.id IN (SELECT channel_id FROM done WHERE status = 'sent')
      AND ch.rate_limit_strikes > 0
    RETURNING ch.id
)
SELECT (SELECT count(*) FROM done) AS completed,
       (SELECT count(*) FROM msg) AS messages,
       (SELECT count(*) FROM chat) AS chats,
       (SELECT count(*) FROM strikes) AS strikes_cleared
"""

# A 429: pause the channel (one write, not a mass update of its rows). With
# Retry-After, that long (up to :max_retry_after: a provider's absurd value
# must not pause a channel for years, nor overflow an interval); without, an
# escalating default: base * 2^strikes, capped. A pause never shortens one
# already in place.
#
# One rate-limit event is one strike. Whapi sends no Retry-After, and the
# requests already in flight when the first 429 came back all answer 429
# too: if the latest of them (:requested_at, unix seconds) left before the
# current event began (rate_limited_at), they belong to it and neither add
# a strike nor extend the pause. The clocks compared are the dispatcher's
# and the database's: on different machines NTP keeps them close enough.
PAUSE_RATE_LIMITED = """
WITH rate_event AS (
    SELECT id,
           rate_limited_at IS NOT NULL
           AND CAST(:requested_at AS float8) IS NOT NULL
           AND to_timestamp(CAST(:requested_at AS float8)) <= rate_limited_at AS same
    FROM outbox.channels
    WHERE id = :channel_id
),
paused AS (
    UPDATE outbox.channels c
    SET paused_until = CASE
            WHEN e.same AND CAST(:retry_after AS float8) IS NULL THEN c.paused_until
            ELSE GREATEST(
                COALESCE(c.paused_until, now()),
                now() + make_interval(secs => COALESCE(
                    -- (LEAST ignores NULLs: a missing Retry-After must stay NULL)
                    CASE WHEN CAST(:retry_after AS float8) IS NOT NULL
                         THEN LEAST(CAST(:retry_after AS float8), CAST(:max_retry_after AS float8))
                    END,
                    LEAST(CAST(:cap_seconds AS float8),
                          CAST(:base_seconds AS float8)
                          * power(2, LEAST(c.rate_limit_strikes, 30))))))
        END,
        pause_reason = :reason,
        pause_cause = 'rate_limit',
        rate_limit_strikes = c.rate_limit_strikes + CASE WHEN e.same THEN 0 ELSE 1 END,
        rate_limited_at = CASE WHEN e.same THEN c.rate_limited_at ELSE now() END,
        updated_at = now()
    FROM rate_event e
    WHERE c.id = e.id
    RETURNING c.id, c.workspace_id, c.paused_until, c.pause_reason, c.rate_limit_strikes,
              NOT e.same AS new_event
),
pause_events AS (
    -- One channel.paused per rate-limit event, not per 429 answer.
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, payload)
    SELECT outbox.next_event_id(), p.workspace_id, 'channel.paused', p.id,
           jsonb_build_object('cause', 'rate_limit', 'reason', p.pause_reason,
                              'paused_until', p.paused_until)
    FROM paused p
    WHERE p.new_event
)
SELECT paused_until, rate_limit_strikes, new_event FROM paused
"""

# The circuit breaker: too many consecutive transient failures on a channel
# (the provider is down for it) pause it briefly, instead of every queued
# row spending its attempts against a wall. Never shortens a longer pause.
PAUSE_CHANNEL_FOR = """
WITH paused AS (
    UPDATE outbox.channels
    SET paused_until = GREATEST(COALESCE(paused_until, now()),
                                now() + make_interval(secs => CAST(:seconds AS float8))),
        pause_reason = :reason,
        pause_cause = 'circuit',
        updated_at = now()
    WHERE id = :channel_id AND status <> 'disabled'
    RETURNING id, workspace_id, paused_until
),
pause_events AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'channel.paused', id,
           jsonb_build_object('cause', 'circuit', 'reason', CAST(:reason AS text),
                              'paused_until', paused_until)
    FROM paused
)
SELECT paused_until FROM paused
"""

# 401/402/404 (and unusable credentials) pause until a human resumes the
# channel, or, for a logged-out session (401), until Whapi reports it back.
# A trial's daily limit (a 402 that says so) pauses until the next day
# boundary, 00:00 UTC (Whapi's day: it documents no other), after which the
# pause runs out like any timed one.
CHANNEL_PROBLEM = """
WITH paused AS (
    UPDATE outbox.channels
    SET status = 'paused',
        paused_until = CASE WHEN CAST(:until_next_day AS boolean)
                            THEN (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day')
                                 AT TIME ZONE 'UTC' END,
        pause_reason = :reason,
        pause_cause = :cause,
        updated_at = now()
    WHERE id = :channel_id AND status <> 'disabled'
    RETURNING id, workspace_id, paused_until
),
pause_events AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'channel.paused', id,
           jsonb_build_object('cause', CAST(:cause AS text), 'reason', CAST(:reason AS text),
                              'paused_until', paused_until)
    FROM paused
)
SELECT id FROM paused
"""

# Heartbeat: a batch still in flight keeps its rows. It never waits for a
# row lock: the same worker's COMPLETE may hold some of these rows, and
# waiting (rows locked in another order) deadlocked the two (found by
# scripts/chaos). A row being completed needs no longer lease; if that
# completion rolls back, the next heartbeat extends it.
EXTEND_LEASE = """
UPDATE outbox.outbox_messages o
SET locked_until = now() + make_interval(secs => :lease_seconds)
WHERE o.id = ANY(ARRAY(
        SELECT id FROM outbox.outbox_messages
        WHERE claim_token = ANY(CAST(:claim_tokens AS uuid[])) AND status = 'sending'
        FOR NO KEY UPDATE SKIP LOCKED))
  AND o.claim_token = ANY(CAST(:claim_tokens AS uuid[])) AND o.status = 'sending'
"""

# --------------------------------------------------------------------------
# RESCUE: rows whose worker vanished (lease expired) go back to the queue.
# A row whose request had started keeps its attempt spent (the provider
# may have it) and is retried now; on the last attempt it is dead-lettered
# with a reason instead of being retried past max_attempts. A row whose
# request never started (its worker died with it waiting for a send slot)
# gets its attempt back and keeps its place, like a released row. Guarded
# by the claim token we read, so a completion that lands first wins and the
# rescue skips the row.
# --------------------------------------------------------------------------
RESCUE_EXPIRED = """
WITH expired AS (
    SELECT id, claim_token, send_started_at IS NULL AS refund
    FROM outbox.outbox_messages
    WHERE status = 'sending' AND locked_until < now()
    ORDER BY locked_until
    LIMIT :limit
    FOR NO KEY UPDATE SKIP LOCKED
),
rescued AS (
    UPDATE outbox.outbox_messages o
    SET status = CASE WHEN NOT e.refund AND o.attempts >= o.max_attempts
                      THEN 'failed' ELSE 'queued' END,
        attempts = o.attempts - CASE WHEN e.refund THEN 1 ELSE 0 END,
        last_error = CASE WHEN e.refund
                          THEN 'lease expired before the request started (worker stopped?); '
                               || 'attempt given back'
                          WHEN o.attempts >= o.max_attempts
                          THEN 'lease expired on the last attempt (worker stopped?); '
                               || 'the provider may have accepted it'
                          ELSE 'lease expired (worker stopped?); retrying' END,
        next_attempt_at = CASE WHEN e.refund THEN o.next_attempt_at ELSE now() END,
        claim_token = NULL,
        locked_until = NULL,
        updated_at = now()
    FROM expired e
    WHERE o.id = e.id AND o.claim_token = e.claim_token
    RETURNING o.id, o.message_id, o.status, o.last_error, e.refund
),
failed_messages AS (
    UPDATE outbox.messages m
    SET status = 'failed', error = r.last_error, updated_at = now()
    FROM rescued r
    WHERE m.id = r.message_id AND r.status = 'failed' AND m.status = 'pending'
    RETURNING m.id, m.workspace_id, m.channel_id, m.chat_id, m.error
),
failed_events AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, message_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'message.failed', channel_id, chat_id, id,
           jsonb_build_object('error', error)
    FROM failed_messages
)
SELECT count(*) FILTER (WHERE status = 'queued') AS requeued,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE refund) AS refunded,
       (SELECT count(*) FROM failed_messages) AS messages_failed
FROM rescued
"""

# --------------------------------------------------------------------------
# MAINTENANCE (outbox/maintenance/): one process at a time does each job.
# The lock is transaction-scoped: taken at the start of each batch's
# transaction, released by its COMMIT (so it also works behind a
# transaction-mode pooler); false when another process holds it.
# --------------------------------------------------------------------------
TRY_MAINTENANCE_LOCK = "SELECT pg_try_advisory_xact_lock(:key)"

# The cron pass's lock (outbox/api/cron.py), held by a transaction that
# stays open, idle, for the whole pass: the server's idle-in-transaction
# timeout, if set, must not end it (and the lock with it) mid-pass.
TRY_CRON_LOCK = """
SELECT set_config('idle_in_transaction_session_timeout', '0', true) IS NOT NULL
       AND pg_try_advisory_xact_lock(:key)
"""

# Timed pauses that have run out: the channel is active again.
UNPAUSE_EXPIRED = """
WITH resumed AS (
    UPDATE outbox.channels
    SET status = 'active', paused_until = NULL, pause_reason = NULL, pause_cause = NULL,
        updated_at = now()
    WHERE paused_until IS NOT NULL AND paused_until <= now() AND status IN ('active', 'paused')
    RETURNING id, workspace_id
),
resume_events AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'channel.resumed', id,
           jsonb_build_object('by', 'timer')
    FROM resumed
)
SELECT id FROM resumed
"""

# Keep the hot table small: delete old sent rows, a batch at a time (the
# messages table keeps the permanent record).
PRUNE_SENT = """
DELETE FROM outbox.outbox_messages
WHERE id IN (
    SELECT id FROM outbox.outbox_messages
    WHERE status = 'sent' AND sent_at < now() - make_interval(secs => :older_than_seconds)
    ORDER BY sent_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
"""

# Cancelled rows are no longer work: the message row keeps `cancelled`.
# ix_outbox_cancelled serves it.
PRUNE_CANCELLED = """
DELETE FROM outbox.outbox_messages
WHERE id IN (
    SELECT id FROM outbox.outbox_messages
    WHERE status = 'cancelled' AND updated_at < now() - make_interval(secs => :older_than_seconds)
    ORDER BY updated_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
"""

# Dead letters back to the queue with fresh attempts (`outbox retry`).
RETRY_FAILED = """
WITH requeued AS (
    UPDATE outbox.outbox_messages o
    SET status = 'queued', attempts = 0, next_attempt_at = now(), claim_token = NULL,
        locked_until = NULL, updated_at = now()
    WHERE o.status = 'failed'
      AND (CAST(:channel_id AS uuid) IS NULL OR o.channel_id = CAST(:channel_id AS uuid))
      AND (CAST(:message_id AS uuid) IS NULL OR o.message_id = CAST(:message_id AS uuid))
      AND (CAST(:workspace_id AS text) IS NULL OR o.workspace_id = CAST(:workspace_id AS text))
    RETURNING o.message_id
),
messages_back AS (
    UPDATE outbox.messages m
    SET status = 'pending', error = NULL, updated_at = now()
    FROM requeued r
    WHERE m.id = r.message_id AND m.status = 'failed'
    RETURNING m.id, m.workspace_id, m.channel_id, m.chat_id, m.type
),
requeued_events AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, message_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'message.queued', channel_id, chat_id, id,
           jsonb_build_object('type', type, 'retry', true)
    FROM messages_back
),
notify AS (
    SELECT pg_notify('outbox_enqueued', '') WHERE EXISTS (SELECT 1 FROM requeued)
)
SELECT (SELECT count(*) FROM requeued) AS requeued,
       (SELECT count(*) FROM messages_back) AS messages,
       (SELECT count(*) FROM notify) AS notified
"""
