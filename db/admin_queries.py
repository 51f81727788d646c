"""The admin services' statements, as SQL, in one place (like db/queries.py).

Channels, their tokens (with the key rotation, which covers the status-callback
endpoints' signing secrets too) and webhook secrets, API keys, and what
`outbox status` reports (the inbox's statements are in db/inbox_queries.py):
what the CLI and the HTTP API read and change, in the caller's session. Parameters are named
(`:name`) and always bound; a filter the caller may leave out is a NULL
parameter (`CAST(:workspace_id AS text) IS NULL OR ...`), so each statement
is one text whatever the caller passes.
"""

from __future__ import annotations

# --------------------------------------------------------------------------
# CHANNELS. Each write returns the columns a `ChannelInfo` shows, so it is
# one round trip.
# --------------------------------------------------------------------------

# The channel and its encrypted token in one statement: a channel never
# exists without its token. (The token's foreign key is checked at the end
# of the statement, when the channel row is there.)
CREATE_CHANNEL = """
WITH channel AS (
    INSERT INTO outbox.channels (id, workspace_id, name, phone_number, provider, base_url,
                                 status, webhook_secret)
    VALUES (CAST(:id AS uuid), :workspace_id, :name, :phone_number, 'whapi', :base_url,
            'active', :webhook_secret)
    RETURNING id, workspace_id, name, phone_number, provider, base_url, status,
              paused_until, pause_reason
),
token AS (
    INSERT INTO outbox.channel_tokens (channel_id, encrypted_token, key_id)
    SELECT id, :encrypted_token, :key_id FROM channel
)
SELECT * FROM channel
"""

LIST_CHANNELS = """
SELECT id, workspace_id, name, phone_number, provider, base_url, status,
       paused_until, pause_reason
FROM outbox.channels
WHERE CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text)
ORDER BY created_at, id
"""

# Each channel of a workspace with its queue: rows waiting, and the
# oldest that is due. Both come from the partial index on queued rows.
CHANNEL_QUEUES = """
SELECT c.id, c.workspace_id, c.name, c.phone_number, c.provider, c.base_url, c.status,
       c.paused_until, c.pause_reason, c.pause_cause,
       q.queued, q.oldest_due_at
FROM outbox.channels c
CROSS JOIN LATERAL (
    SELECT count(*) AS queued,
           min(o.next_attempt_at) FILTER (WHERE o.next_attempt_at <= now()) AS oldest_due_at
    FROM outbox.outbox_messages o
    WHERE o.channel_id = c.id AND o.status = 'queued'
) q
WHERE c.workspace_id = :workspace_id
ORDER BY c.created_at, c.id
"""

# Every column: the caller gets the whole `Channel` model (its webhook
# secret too).
CHANNEL = """
SELECT *
FROM outbox.channels
WHERE id = CAST(:channel_id AS uuid)
  AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
"""

# An operator's pause, in place of any other: until resumed, or for
# :seconds (NULL seconds, a NULL interval: paused_until stays NULL). Its
# cause is 'manual', so no session webhook resumes it.
PAUSE_CHANNEL = """
WITH paused AS (
    UPDATE outbox.channels
    SET status = 'paused',
        paused_until = now() + make_interval(secs => CAST(:seconds AS float8)),
        pause_reason = :reason,
        pause_cause = 'manual',
        updated_at = now()
    WHERE id = CAST(:channel_id AS uuid)
      AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
    RETURNING id, workspace_id, name, phone_number, provider, base_url, status,
              paused_until, pause_reason
),
pause_event AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'channel.paused', id,
           jsonb_build_object('cause', 'manual', 'reason', pause_reason,
                              'paused_until', paused_until)
    FROM paused
)
SELECT * FROM paused
"""

# Active again from any pause (or from disabled), rate-limit strikes
# cleared: the next 429 starts the escalating pause from its base.
# channel.resumed only if it was stopped (`was`: read under the row lock
# the UPDATE takes anyway).
RESUME_CHANNEL = """
WITH was AS (
    SELECT id, status <> 'active' OR paused_until IS NOT NULL AS stopped
    FROM outbox.channels
    WHERE id = CAST(:channel_id AS uuid)
      AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
    FOR NO KEY UPDATE
),
resumed AS (
    UPDATE outbox.channels c
    SET status = 'active',
        paused_until = NULL,
        pause_reason = NULL,
        pause_cause = NULL,
        rate_limit_strikes = 0,
        rate_limited_at = NULL,
        updated_at = now()
    FROM was
    WHERE c.id = was.id
    RETURNING c.id, c.workspace_id, c.name, c.phone_number, c.provider, c.base_url, c.status,
              c.paused_until, c.pause_reason, was.stopped
),
resume_event AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'channel.resumed', id,
           jsonb_build_object('by', 'user')
    FROM resumed
    WHERE stopped
)
SELECT id, workspace_id, name, phone_number, provider, base_url, status, paused_until,
       pause_reason
FROM resumed
"""

# A new token (stored, or added if the channel had none). A channel that
# stopped because of its token (disabled, or paused as `unauthorized` by
# Whapi's 401 or `credentials` when it could not be decrypted) is active
# again; other pauses stay.
STORE_NEW_CREDENTIAL = """
WITH target AS (
    SELECT id, (status = 'disabled' OR (status = 'paused'
                AND pause_cause IN ('unauthorized', 'credentials'))) AS revive
    FROM outbox.channels
    WHERE id = CAST(:channel_id AS uuid)
      AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
    FOR UPDATE
),
stored AS (
    INSERT INTO outbox.channel_tokens (channel_id, encrypted_token, key_id)
    SELECT id, :encrypted_token, :key_id FROM target
    ON CONFLICT (channel_id) DO UPDATE
    SET encrypted_token = EXCLUDED.encrypted_token, key_id = EXCLUDED.key_id,
        created_at = now()
),
updated AS (
    UPDATE outbox.channels c
    SET status = CASE WHEN t.revive THEN 'active' ELSE c.status END,
        paused_until = CASE WHEN t.revive THEN NULL ELSE c.paused_until END,
        pause_reason = CASE WHEN t.revive THEN NULL ELSE c.pause_reason END,
        pause_cause = CASE WHEN t.revive THEN NULL ELSE c.pause_cause END,
        updated_at = now()
    FROM target t
    WHERE c.id = t.id
    RETURNING c.id, c.workspace_id, c.name, c.phone_number, c.provider, c.base_url, c.status,
              c.paused_until, c.pause_reason, t.revive
),
resume_event AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'channel.resumed', id,
           jsonb_build_object('by', 'credentials')
    FROM updated
    WHERE revive
)
SELECT id, workspace_id, name, phone_number, provider, base_url, status, paused_until,
       pause_reason
FROM updated
"""

# --------------------------------------------------------------------------
# WEBHOOK SECRETS: a new one, the replaced one kept for a grace window.
# --------------------------------------------------------------------------

# Locked: two rotations at once queue up, and the second moves the first's
# new secret to previous (not the secret both read).
WEBHOOK_CHANNEL_TO_ROTATE = """
SELECT id, base_url, webhook_secret
FROM outbox.channels
WHERE id = CAST(:channel_id AS uuid)
  AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
FOR UPDATE
"""

# :previous NULL: no grace window (keep_old_for 0, or a secret that was
# stored in the clear). The window ends on the database's clock, which is
# the one the webhook check reads.
STORE_NEW_WEBHOOK_CIPHERTEXT = """
UPDATE outbox.channels
SET webhook_secret = :webhook_secret,
    previous_webhook_secret = CAST(:previous AS text),
    previous_webhook_secret_until =
        CASE WHEN CAST(:previous AS text) IS NULL THEN NULL
             ELSE now() + make_interval(secs => CAST(:keep_seconds AS double precision)) END,
    updated_at = now()
WHERE id = CAST(:channel_id AS uuid)
RETURNING previous_webhook_secret_until
"""

# --------------------------------------------------------------------------
# TOKENS: the key rotation (`outbox tokens rotate-key`) and its check.
# --------------------------------------------------------------------------

# Locked in a stable order, so two rotations started together queue up
# instead of deadlocking.
TOKENS_FOR_ROTATION = """
SELECT t.channel_id, t.encrypted_token, t.key_id, c.base_url, c.webhook_secret,
       c.previous_webhook_secret, now() < c.previous_webhook_secret_until AS previous_live
FROM outbox.channel_tokens t
JOIN outbox.channels c ON c.id = t.channel_id
ORDER BY t.channel_id
FOR UPDATE
"""

# A channel without a token (only a hand-edited database has one) still has a
# webhook secret to encrypt.
TOKENLESS_CHANNELS_FOR_ROTATION = """
SELECT c.id AS channel_id, c.base_url, c.webhook_secret,
       c.previous_webhook_secret, now() < c.previous_webhook_secret_until AS previous_live
FROM outbox.channels c
WHERE NOT EXISTS (SELECT 1 FROM outbox.channel_tokens t WHERE t.channel_id = c.id)
ORDER BY c.id
FOR UPDATE
"""

STORE_WEBHOOK_CIPHERTEXT = """
UPDATE outbox.channels SET webhook_secret = :webhook_secret WHERE id = :channel_id
"""

# A previous secret still in its window, under the new key; one past it (or
# NULL :previous) is dropped: no webhook takes it any more.
STORE_PREVIOUS_WEBHOOK_CIPHERTEXT = """
UPDATE outbox.channels
SET previous_webhook_secret = CAST(:previous AS text),
    previous_webhook_secret_until = CASE WHEN CAST(:previous AS text) IS NULL THEN NULL
                                         ELSE previous_webhook_secret_until END
WHERE id = :channel_id
"""

STORE_REENCRYPTED = """
UPDATE outbox.channel_tokens
SET encrypted_token = :encrypted_token, key_id = :key_id
WHERE channel_id = :channel_id
"""

# Status-callback endpoints' signing secrets, disabled ones too (they can be
# enabled again). Locked last in the rotation, in a stable order: the
# callback sender's updates to an endpoint (its health) wait only from here
# to the commit, not for the whole rotation.
ENDPOINT_SECRETS_FOR_ROTATION = """
SELECT id, url, encrypted_secret, key_id
FROM outbox.webhook_endpoints
ORDER BY id
FOR UPDATE
"""

STORE_ENDPOINT_CIPHERTEXT = """
UPDATE outbox.webhook_endpoints
SET encrypted_secret = :encrypted_secret, key_id = :key_id
WHERE id = :endpoint_id
"""

# Every channel, with its token if it has one: one without is reported too.
TOKENS_FOR_CHECK = """
SELECT c.id, c.name, c.workspace_id, c.status, c.base_url, t.encrypted_token, t.key_id,
       c.webhook_secret NOT LIKE 'v2:%' AS secret_in_clear,
       CASE WHEN now() < c.previous_webhook_secret_until
            THEN c.previous_webhook_secret END AS previous_webhook_secret
FROM outbox.channels c
LEFT JOIN outbox.channel_tokens t ON t.channel_id = c.id
WHERE (CAST(:workspace_id AS text) IS NULL OR c.workspace_id = CAST(:workspace_id AS text))
ORDER BY c.created_at, c.id
"""

# Every endpoint of the workspace (of all, NULL :workspace_id), disabled too.
ENDPOINT_SECRETS_FOR_CHECK = """
SELECT id, workspace_id, url, status, encrypted_secret, key_id
FROM outbox.webhook_endpoints
WHERE (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
ORDER BY created_at, id
"""

# --------------------------------------------------------------------------
# API KEYS: only a hash is stored; the prefix (not secret) finds the row.
# --------------------------------------------------------------------------
INSERT_API_KEY = """
INSERT INTO outbox.api_keys (workspace_id, name, prefix, key_hash, scopes)
VALUES (:workspace_id, :name, :prefix, :key_hash, CAST(:scopes AS text[]))
RETURNING id, created_at
"""

API_KEY_BY_PREFIX = """
SELECT id, workspace_id, key_hash, scopes
FROM outbox.api_keys
WHERE prefix = :prefix AND revoked_at IS NULL
"""

LIST_API_KEYS = """
SELECT id, workspace_id, name, prefix, scopes, created_at, revoked_at
FROM outbox.api_keys
WHERE CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text)
ORDER BY created_at, id
"""

REVOKE_API_KEY = """
UPDATE outbox.api_keys SET revoked_at = now()
WHERE id = CAST(:id AS uuid) AND revoked_at IS NULL
  AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
RETURNING id
"""

# Chats, threads, contacts and a message's detail: db/inbox_queries.py.

# --------------------------------------------------------------------------
# MESSAGE STATUS
# --------------------------------------------------------------------------
# What an enqueue that found its idempotency key answers with: where the
# existing message is now.
MESSAGE_STATUS = """
SELECT status FROM outbox.messages WHERE id = CAST(:message_id AS uuid)
"""

# --------------------------------------------------------------------------
# STATUS (`outbox status`): what the queue holds, per channel.
# --------------------------------------------------------------------------
STATUS_COUNTS = """
SELECT o.channel_id, c.name, o.status, count(*) AS n
FROM outbox.outbox_messages o
JOIN outbox.channels c ON c.id = o.channel_id
WHERE (CAST(:workspace_id AS text) IS NULL OR o.workspace_id = CAST(:workspace_id AS text))
GROUP BY o.channel_id, c.name, o.status
ORDER BY c.name, o.channel_id, o.status
"""

# 'v2:' starts what outbox/crypto.py writes: anything else is a webhook
# secret in the clear, or a token from an older version's passphrase.
STATUS_CHANNELS = """
SELECT c.id, c.name, c.status, c.paused_until, c.pause_reason, c.rate_limit_strikes,
       c.webhook_secret NOT LIKE 'v2:%' AS secret_in_clear,
       coalesce(t.encrypted_token NOT LIKE 'v2:%', false) AS passphrase_token
FROM outbox.channels c
LEFT JOIN outbox.channel_tokens t ON t.channel_id = c.id
WHERE (CAST(:workspace_id AS text) IS NULL OR c.workspace_id = CAST(:workspace_id AS text))
ORDER BY c.name, c.id
"""

STATUS_OLDEST_DUE = """
SELECT EXTRACT(EPOCH FROM now() - min(next_attempt_at))::float8 AS seconds
FROM outbox.outbox_messages
WHERE status = 'queued' AND next_attempt_at <= now()
  AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
"""

STATUS_DEAD_LETTERS = """
SELECT o.message_id, o.channel_id, o.recipient, o.attempts, o.last_error, o.updated_at
FROM outbox.outbox_messages o
WHERE o.status = 'failed'
  AND (CAST(:workspace_id AS text) IS NULL OR o.workspace_id = CAST(:workspace_id AS text))
ORDER BY o.updated_at DESC
LIMIT :limit
"""

# Webhook bodies we kept because we could not use them (webhooks/apply.py).
STATUS_WEBHOOK_DEAD_LETTERS = """
SELECT ch.workspace_id, count(*) AS n, max(d.received_at) AS latest
FROM outbox.webhook_dead_letters d
JOIN outbox.channels ch ON ch.id = d.channel_id
WHERE CAST(:workspace_id AS text) IS NULL OR ch.workspace_id = CAST(:workspace_id AS text)
GROUP BY ch.workspace_id
"""
