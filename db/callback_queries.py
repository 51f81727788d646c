"""Status callbacks (outgoing webhooks), as SQL: endpoints, the fan-out of
events into deliveries, and the deliveries' claim and completion.

A delivery is one event for one endpoint, and lives like an outbox row:
claimed with SKIP LOCKED under a lease (a sender that dies leaves it to be
claimed again when the lease runs out), retried with backoff, dead-lettered
(`failed`) after 3 days. The fan-out reads events the way the stream does
(below the horizon, db/event_queries.py), so no event is skipped when
transactions commit out of order; it runs in one process at a time (the
cursor row, locked SKIP LOCKED) and is idempotent anyway (one delivery per
endpoint and event).
"""

from __future__ import annotations

from outbox.db.event_queries import HORIZON_CTE

# --------------------------------------------------------------------------
# ENDPOINTS (outbox/admin/endpoints.py)
# --------------------------------------------------------------------------
_ENDPOINT_COLUMNS = """id, workspace_id, url, event_types, status, disabled_reason,
       failing_since, created_at"""

# Delivered: the events that commit after it is added (below the horizon
# now is history).
INSERT_ENDPOINT = f"""
WITH {HORIZON_CTE}
INSERT INTO outbox.webhook_endpoints
    (id, workspace_id, url, event_types, encrypted_secret, key_id, after_event_id)
SELECT CAST(:id AS uuid), :workspace_id, :url, CAST(:event_types AS text[]),
       :encrypted_secret, :key_id, horizon.id - 1
FROM horizon
RETURNING {_ENDPOINT_COLUMNS}
"""

# An endpoint with its deliveries still waiting and its dead letters.
_ENDPOINT_WITH_COUNTS = f"""SELECT {_ENDPOINT_COLUMNS},
       (SELECT count(*) FROM outbox.webhook_deliveries d
        WHERE d.endpoint_id = w.id AND d.status IN ('pending', 'delivering')) AS waiting,
       (SELECT count(*) FROM outbox.webhook_deliveries d
        WHERE d.endpoint_id = w.id AND d.status = 'failed') AS failed
FROM outbox.webhook_endpoints w"""

LIST_ENDPOINTS = f"""
{_ENDPOINT_WITH_COUNTS}
WHERE CAST(:workspace_id AS text) IS NULL OR w.workspace_id = CAST(:workspace_id AS text)
ORDER BY w.created_at, w.id
"""

ENDPOINT = f"""
{_ENDPOINT_WITH_COUNTS}
WHERE id = CAST(:endpoint_id AS uuid)
  AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
"""

# Its deliveries go with it (ON DELETE CASCADE).
DELETE_ENDPOINT = """
DELETE FROM outbox.webhook_endpoints
WHERE id = CAST(:endpoint_id AS uuid)
  AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
RETURNING id
"""

# Active again, its failure clock cleared. Its deliveries that waited
# while it was disabled (and ones a dead sender left) are due at once;
# with :retry_failed, its dead letters still held too (their 3 days still
# count from when they were created: a retry that fails past them is
# dead-lettered again). Events that committed while it was disabled were
# never fanned out to it (FAN_OUT skips disabled endpoints).
ENABLE_ENDPOINT = """
WITH target AS (
    SELECT id FROM outbox.webhook_endpoints
    WHERE id = CAST(:endpoint_id AS uuid)
      AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
    FOR NO KEY UPDATE
),
enabled AS (
    UPDATE outbox.webhook_endpoints w
    SET status = 'active', disabled_reason = NULL, failing_since = NULL, updated_at = now()
    FROM target
    WHERE w.id = target.id
    RETURNING w.id
),
resumed AS (
    UPDATE outbox.webhook_deliveries d
    SET status = 'pending', next_attempt_at = now(), claim_token = NULL, locked_until = NULL
    FROM target
    WHERE d.endpoint_id = target.id
      AND (d.status = 'pending'
           OR (d.status = 'delivering' AND d.locked_until < now())
           OR (CAST(:retry_failed AS boolean) AND d.status = 'failed'))
    RETURNING d.id
)
SELECT enabled.id, (SELECT count(*) FROM resumed) AS resumed
FROM enabled
"""

# Newest first, a page before a delivery id.
ENDPOINT_DELIVERIES = """
SELECT id, event_id, event_type, status, attempts, next_attempt_at, last_status_code,
       last_error, created_at, delivered_at
FROM outbox.webhook_deliveries
WHERE endpoint_id = CAST(:endpoint_id AS uuid)
  AND (CAST(:before AS bigint) IS NULL OR id < CAST(:before AS bigint))
ORDER BY id DESC
LIMIT :limit
"""

DELIVERY_COUNTS = """
SELECT d.status, count(*)
FROM outbox.webhook_deliveries d
JOIN outbox.webhook_endpoints w ON w.id = d.endpoint_id
WHERE CAST(:workspace_id AS text) IS NULL OR w.workspace_id = CAST(:workspace_id AS text)
GROUP BY d.status
"""

# --------------------------------------------------------------------------
# FAN-OUT: the events after the cursor, up to the horizon, become
# deliveries for the active endpoints that want them. One process at a
# time: the cursor row is locked SKIP LOCKED (another process holding it:
# no row, nothing done). `body` is the event as the stream shows it.
# --------------------------------------------------------------------------
FAN_OUT = f"""
WITH {HORIZON_CTE},
cursor AS MATERIALIZED (
    SELECT last_event_id FROM outbox.webhook_fanout WHERE id = 1 FOR UPDATE SKIP LOCKED
),
batch AS MATERIALIZED (
    SELECT e.*
    FROM outbox.events e
    WHERE e.id > (SELECT last_event_id FROM cursor)
      AND e.id < (SELECT id FROM horizon)
    ORDER BY e.id
    LIMIT :limit
),
added AS (
    INSERT INTO outbox.webhook_deliveries (endpoint_id, event_id, event_type, body)
    SELECT w.id, e.id, e.type,
           jsonb_build_object('id', e.id, 'type', e.type, 'occurred_at', e.occurred_at,
                              'channel_id', e.channel_id, 'chat_id', e.chat_id,
                              'message_id', e.message_id, 'payload', e.payload)
    FROM batch e
    JOIN outbox.webhook_endpoints w
      ON w.workspace_id = e.workspace_id AND w.status = 'active'
     AND e.type = ANY(w.event_types) AND e.id > w.after_event_id
    ORDER BY e.id
    ON CONFLICT (endpoint_id, event_id) DO NOTHING
    RETURNING id
),
moved AS (
    UPDATE outbox.webhook_fanout f
    SET last_event_id = CASE
            WHEN (SELECT count(*) FROM batch) >= :limit THEN (SELECT max(id) FROM batch)
            ELSE GREATEST(f.last_event_id, (SELECT id FROM horizon) - 1) END
    WHERE f.id = 1 AND EXISTS (SELECT 1 FROM cursor)
    RETURNING f.last_event_id
)
SELECT EXISTS (SELECT 1 FROM cursor) AS ours,
       (SELECT count(*) FROM batch) AS events,
       (SELECT count(*) FROM added) AS deliveries
"""

# --------------------------------------------------------------------------
# CLAIM: due deliveries (and ones whose sender's lease ran out), fairly
# across active endpoints, committed as ours before any request. A sender
# holds at most :per_endpoint deliveries of an endpoint (on the wire, or
# next in line): :busy_endpoints/:busy_counts are what it holds now, and
# an endpoint it holds enough of is skipped. Endpoints in random order;
# :batch_size is what the sender can still hold.
# --------------------------------------------------------------------------
CLAIM_DELIVERIES = """
WITH endpoints AS MATERIALIZED (
    SELECT e.id, e.share - COALESCE(busy.n, 0) AS room
    FROM (
        -- A failing endpoint (its last answer not a 2xx) gets one delivery
        -- at a time until one goes through: endpoints that are down hold a
        -- slot each, not their whole share, however many of them there are.
        SELECT w.id, CASE WHEN w.failing_since IS NULL THEN :per_endpoint ELSE 1 END AS share
        FROM outbox.webhook_endpoints w
        WHERE w.status = 'active'
    ) e
    LEFT JOIN unnest(CAST(:busy_endpoints AS uuid[]), CAST(:busy_counts AS int[]))
         AS busy(id, n) ON busy.id = e.id
    WHERE e.share - COALESCE(busy.n, 0) > 0
    ORDER BY random()
),
candidates AS MATERIALIZED (
    SELECT d.id
    FROM endpoints ep
    CROSS JOIN LATERAL (
        SELECT d.id FROM (
            (SELECT d.id, d.next_attempt_at FROM outbox.webhook_deliveries d
             WHERE d.endpoint_id = ep.id AND d.status = 'pending' AND d.next_attempt_at <= now()
             ORDER BY d.next_attempt_at LIMIT ep.room)
            UNION ALL
            (SELECT d.id, d.locked_until FROM outbox.webhook_deliveries d
             WHERE d.endpoint_id = ep.id AND d.status = 'delivering' AND d.locked_until < now()
             LIMIT ep.room)
        ) due
        -- Locked below, the row is re-read as committed if another sender
        -- changed it meanwhile, and only this condition is checked again
        -- (not the ones inside `due`): still due, or another claimed it.
        JOIN outbox.webhook_deliveries d ON d.id = due.id
        WHERE (d.status = 'pending' AND d.next_attempt_at <= now())
           OR (d.status = 'delivering' AND d.locked_until < now())
        ORDER BY due.next_attempt_at
        LIMIT ep.room
        FOR NO KEY UPDATE OF d SKIP LOCKED
    ) d
    LIMIT :batch_size
)
UPDATE outbox.webhook_deliveries d
SET status = 'delivering',
    attempts = d.attempts + 1,
    claim_token = :claim_token,
    locked_until = now() + make_interval(secs => :lease_seconds)
WHERE d.id = ANY(ARRAY(SELECT id FROM candidates))
  AND ((d.status = 'pending' AND d.next_attempt_at <= now())
       OR (d.status = 'delivering' AND d.locked_until < now()))
RETURNING d.id, d.endpoint_id, d.event_id, d.body, d.attempts, d.created_at
"""

# A stopping sender hands back what it claimed and never posted: due again
# at once for the next sender, the claim's attempt not counted. The token
# makes sure it is still this claim's row.
RELEASE_DELIVERIES = """
UPDATE outbox.webhook_deliveries d
SET status = 'pending',
    attempts = d.attempts - 1,
    claim_token = NULL,
    locked_until = NULL
FROM unnest(CAST(:ids AS bigint[]), CAST(:claim_tokens AS uuid[])) AS r(id, claim_token)
WHERE d.id = r.id AND d.claim_token = r.claim_token AND d.status = 'delivering'
"""

# What a sender needs of the endpoints it claimed for.
ENDPOINT_SECRETS = """
SELECT id, url, encrypted_secret, key_id
FROM outbox.webhook_endpoints
WHERE id = ANY(CAST(:endpoint_ids AS uuid[]))
"""

# --------------------------------------------------------------------------
# COMPLETE: a group of outcomes, guarded by the claim (a delivery whose
# lease ran out and was claimed again is no longer ours), and the
# endpoints' health with them: a success clears `failing_since`; a failure
# sets it; failing for :disable_after_seconds, or a 410, disables the
# endpoint with a reason.
# --------------------------------------------------------------------------
COMPLETE_DELIVERIES = """
WITH o AS (
    SELECT *
    FROM unnest(CAST(:ids AS bigint[]), CAST(:claim_tokens AS uuid[]),
                CAST(:statuses AS text[]), CAST(:delays AS float8[]),
                CAST(:status_codes AS int[]), CAST(:errors AS text[]))
         AS o(id, claim_token, status, delay_seconds, status_code, error)
),
done AS (
    UPDATE outbox.webhook_deliveries d
    SET status = o.status,
        next_attempt_at = CASE WHEN o.status = 'pending'
                               THEN now() + make_interval(secs => o.delay_seconds)
                               ELSE d.next_attempt_at END,
        delivered_at = CASE WHEN o.status = 'delivered' THEN now() END,
        last_status_code = o.status_code,
        last_error = o.error,
        claim_token = NULL,
        locked_until = NULL
    FROM o
    WHERE d.id = o.id AND d.claim_token = o.claim_token AND d.status = 'delivering'
    RETURNING d.id, d.endpoint_id, o.status, o.status_code
),
health AS (
    SELECT endpoint_id,
           bool_or(status = 'delivered') AS ok,
           bool_or(status_code = 410) AS gone
    FROM done
    GROUP BY endpoint_id
),
endpoints AS (
    UPDATE outbox.webhook_endpoints w
    SET failing_since = CASE WHEN h.ok AND NOT h.gone THEN NULL
                             ELSE COALESCE(w.failing_since, now()) END,
        status = CASE WHEN h.gone THEN 'disabled'
                      WHEN NOT h.ok AND w.failing_since
                           < now() - make_interval(secs => :disable_after_seconds)
                      THEN 'disabled'
                      ELSE w.status END,
        disabled_reason = CASE
            WHEN h.gone THEN 'the receiver answered 410 Gone'
            WHEN NOT h.ok AND w.failing_since
                 < now() - make_interval(secs => :disable_after_seconds)
            THEN 'failing since ' || to_char(w.failing_since AT TIME ZONE 'UTC',
                                             'YYYY-MM-DD HH24:MI "UTC"')
            ELSE w.disabled_reason END,
        updated_at = now()
    FROM health h
    WHERE w.id = h.endpoint_id AND w.status = 'active'
      AND (h.gone OR NOT h.ok OR w.failing_since IS NOT NULL)
    RETURNING w.id, w.status, w.failing_since
)
SELECT ARRAY(SELECT id FROM done) AS completed,
       ARRAY(SELECT id FROM endpoints WHERE status = 'disabled') AS disabled,
       -- failing until now: their full share again (CLAIM_DELIVERIES)
       ARRAY(SELECT id FROM endpoints WHERE status = 'active' AND failing_since IS NULL)
           AS recovered
"""


# --------------------------------------------------------------------------
# UPKEEP (outbox/maintenance/delivery_pruner.py), a batch at a time.
#
# A disabled endpoint's deliveries are never claimed: the ones still
# waiting (or left `delivering` by a sender that died) when they are
# :max_age_seconds old are dead-lettered, as a retry would have been.
# Until then, re-enabling the endpoint sends them.
# --------------------------------------------------------------------------
GIVE_UP_DISABLED = """
WITH batch AS MATERIALIZED (
    SELECT d.id
    FROM outbox.webhook_endpoints w
    JOIN outbox.webhook_deliveries d ON d.endpoint_id = w.id
    WHERE w.status = 'disabled'
      AND (d.status = 'pending' OR (d.status = 'delivering' AND d.locked_until < now()))
      AND d.created_at < now() - make_interval(secs => CAST(:max_age_seconds AS float8))
    LIMIT :limit
    FOR NO KEY UPDATE OF d SKIP LOCKED
)
UPDATE outbox.webhook_deliveries d
SET status = 'failed',
    claim_token = NULL,
    locked_until = NULL,
    last_error = 'not sent: its endpoint stayed disabled'
FROM batch
WHERE d.id = batch.id
"""

# Delivered and dead-lettered deliveries created more than
# :older_than_seconds ago, oldest first. The scan stops at the first
# delivery young enough (ids follow creation), so a pass reads only what is
# old: the batch, and old deliveries still waiting (a retry, a disabled
# endpoint's), which stay.
PRUNE_DELIVERIES = """
WITH young AS (
    SELECT min(id) AS id
    FROM outbox.webhook_deliveries
    WHERE created_at >= now() - make_interval(secs => CAST(:older_than_seconds AS float8))
)
DELETE FROM outbox.webhook_deliveries
WHERE id = ANY(ARRAY(
    SELECT id FROM outbox.webhook_deliveries
    WHERE id < COALESCE((SELECT id FROM young), 9223372036854775807)
      AND status IN ('delivered', 'failed')
    ORDER BY id
    LIMIT :limit))
"""
