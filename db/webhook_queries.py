"""Whapi's webhooks applied to the database, as SQL, in one place (like
db/queries.py).

Statuses and the early-status backlog, inbound messages, reactions, edits
and deletes (and what waits for its message), chats and channel sessions
from Whapi's own events, and the bodies we could not use. Parameters are
named (`:name`) and always bound. Statements that take a batch take arrays,
so one round trip handles the whole batch.
"""

from __future__ import annotations

# --------------------------------------------------------------------------
# STATUSES: move messages forward, never back.
#
# The order is a parameter (:ranks, outbox.webhook_events.STATUS_ORDER):
#     pending < sent < failed < delivered < read < played
# so `failed` moves only a message not yet delivered, and a delivery after
# a failure wins. Only outbound messages take statuses (Whapi also reports
# on messages it delivered to us). A status applies only if it ranks above
# the message's current one, so the
# result is the furthest status whatever order webhooks arrive in, repeats
# and replays change nothing, and a late `delivered` after `read` is a
# no-op. The comparison is in the UPDATE's WHERE: under concurrent webhooks
# PostgreSQL re-checks it against the latest row version (no read-modify-
# write race).
#
# Several statuses for one message in one batch collapse to the furthest
# (an UPDATE ... FROM must match each row once); the earliest delivery and
# read times in the batch become delivered_at and read_at.
#
# Ids no message carries yet go to the backlog: Whapi may report `sent`
# before the dispatcher has recorded the id the send returned.
# --------------------------------------------------------------------------
# The forward-only rule itself, shared by the two statements below: from a
# source CTE of (channel_id, wa_message_id, status, status_at, rank) rows,
# the furthest status per message, applied only if it ranks higher.
_FORWARD_ONLY = """
furthest AS (
    SELECT channel_id, wa_message_id,
           (array_agg(status ORDER BY rank DESC))[1] AS status,
           max(rank) AS rank,
           min(status_at) FILTER (WHERE status IN ('delivered', 'read', 'played')) AS delivered_at,
           min(status_at) FILTER (WHERE status IN ('read', 'played')) AS read_at,
           max(error) FILTER (WHERE status = 'failed') AS error
    FROM {source}
    GROUP BY channel_id, wa_message_id
),
applied AS (
    UPDATE outbox.messages m
    SET status = f.status,
        delivered_at = CASE WHEN f.status IN ('delivered', 'read', 'played')
                            THEN COALESCE(m.delivered_at, f.delivered_at, now())
                            ELSE m.delivered_at END,
        read_at = CASE WHEN f.status IN ('read', 'played')
                       THEN COALESCE(m.read_at, f.read_at, now())
                       ELSE m.read_at END,
        error = CASE WHEN f.status = 'failed'
                     THEN COALESCE(f.error, 'failed after it was sent (WhatsApp status)')
                     ELSE m.error END,
        updated_at = now()
    FROM furthest f
    WHERE m.channel_id = f.channel_id
      AND m.wa_message_id = f.wa_message_id
      AND m.direction = 'outbound'
      AND f.rank > array_position(CAST(:ranks AS text[]), m.status)
    RETURNING m.id, m.workspace_id, m.channel_id, m.chat_id, m.status, m.error
),
status_events AS (
    -- One event per message moved, for its new (furthest) status: a batch
    -- that brings delivered and read at once says read.
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, message_id, payload)
    SELECT outbox.next_event_id(), a.workspace_id, 'message.' || a.status, a.channel_id,
           a.chat_id, a.id,
           CASE WHEN a.status = 'failed' THEN jsonb_build_object('error', a.error)
                ELSE '{{}}'::jsonb END
    FROM applied a
)"""

APPLY_STATUSES = """
WITH incoming AS (
    SELECT DISTINCT CAST(:channel_id AS uuid) AS channel_id, t.wa_message_id, t.status,
           t.status_at, t.error, array_position(CAST(:ranks AS text[]), t.status) AS rank
    FROM unnest(CAST(:wa_message_ids AS text[]), CAST(:statuses AS text[]),
                CAST(:status_ats AS timestamptz[]), CAST(:errors AS text[]))
         AS t(wa_message_id, status, status_at, error)
),""" + _FORWARD_ONLY.format(source="incoming") + """,
known AS (
    SELECT f.wa_message_id
    FROM furthest f
    WHERE EXISTS (SELECT 1 FROM outbox.messages m
                  WHERE m.channel_id = f.channel_id
                    AND m.wa_message_id = f.wa_message_id)
),
backlogged AS (
    INSERT INTO outbox.webhook_status_backlog (channel_id, wa_message_id, status, status_at, error)
    SELECT i.channel_id, i.wa_message_id, i.status, i.status_at, i.error
    FROM incoming i
    WHERE NOT EXISTS (SELECT 1 FROM known k WHERE k.wa_message_id = i.wa_message_id)
    ON CONFLICT (channel_id, wa_message_id, status) DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM applied) AS applied,
       (SELECT count(*) FROM known) AS known,
       (SELECT count(*) FROM backlogged) AS backlogged
"""

# The backlog's statuses whose message now carries the id: take them (a
# batch, SKIP LOCKED so concurrent callers split the work) and apply them
# with the same forward-only rule as APPLY_STATUSES.
APPLY_STATUS_BACKLOG = """
WITH ready AS (
    SELECT b.id
    FROM outbox.webhook_status_backlog b
    JOIN outbox.messages m ON m.channel_id = b.channel_id AND m.wa_message_id = b.wa_message_id
    WHERE CAST(:channel_id AS uuid) IS NULL OR b.channel_id = CAST(:channel_id AS uuid)
    ORDER BY b.id
    LIMIT :limit
    FOR UPDATE OF b SKIP LOCKED
),
taken AS (
    DELETE FROM outbox.webhook_status_backlog b
    USING ready r
    WHERE b.id = r.id
    RETURNING b.channel_id, b.wa_message_id, b.status, b.status_at, b.error,
              array_position(CAST(:ranks AS text[]), b.status) AS rank
),""" + _FORWARD_ONLY.format(source="taken") + """
SELECT (SELECT count(*) FROM taken) AS taken,
       (SELECT count(*) FROM applied) AS applied
"""

# Statuses whose id never showed up (a send we never recorded: a duplicate
# after an ambiguous timeout, or a message sent from the phone).
EXPIRE_STATUS_BACKLOG = """
DELETE FROM outbox.webhook_status_backlog
WHERE id IN (
    SELECT id FROM outbox.webhook_status_backlog
    WHERE received_at < now() - make_interval(secs => :older_than_seconds)
    ORDER BY received_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
"""

# --------------------------------------------------------------------------
# INBOUND MESSAGES
# --------------------------------------------------------------------------

# The previous secret only while its grace window lasts, on the database's
# clock (rotate_webhook_secret set the window on it).
CHANNEL_FOR_WEBHOOK = """
SELECT id, workspace_id, webhook_secret, base_url,
       CASE WHEN now() < previous_webhook_secret_until
            THEN previous_webhook_secret END AS previous_webhook_secret
FROM outbox.channels
WHERE id = CAST(:channel_id AS uuid)
"""

# Get-or-create in two statements: INSERT ... ON CONFLICT, then SELECT. The
# SELECT is a new statement, so its snapshot sees a row a concurrent
# transaction committed (the one that made the INSERT skip). A known contact
# without a name takes the sender's (`from_name`); a name it has (an earlier
# one, the team's) stays. (DO UPDATE locks the contact's row until commit,
# as the message's insert locks its chat's.)
INSERT_CONTACT = """
INSERT INTO outbox.contacts AS ct (workspace_id, phone, name, is_group)
VALUES (:workspace_id, :phone, :name, :is_group)
ON CONFLICT (workspace_id, phone) DO UPDATE SET name = EXCLUDED.name
    WHERE ct.name IS NULL AND EXCLUDED.name IS NOT NULL
RETURNING id
"""

SELECT_CONTACT = """
SELECT id FROM outbox.contacts WHERE workspace_id = :workspace_id AND phone = :phone
"""

INSERT_CHAT = """
INSERT INTO outbox.chats (workspace_id, channel_id, wa_chat_id, contact_id)
VALUES (:workspace_id, CAST(:channel_id AS uuid), :wa_chat_id, CAST(:contact_id AS uuid))
ON CONFLICT (channel_id, wa_chat_id) DO NOTHING
RETURNING id
"""

SELECT_CHAT = """
SELECT id FROM outbox.chats
WHERE channel_id = CAST(:channel_id AS uuid) AND wa_chat_id = :wa_chat_id
"""

# One statement, so the chat is bumped (and the event written) if and only
# if the message is new:
# a replayed webhook conflicts on (channel_id, wa_message_id) and does
# nothing at all. A concurrent duplicate waits for the first insert's
# commit, then conflicts. The chat's last message moves only forward in
# time (webhooks can arrive out of order). Someone writing to us
# (:counts_unread) adds one unread and reopens an archived chat; a message
# typed on the channel's phone moves the last message only; calls and
# system notes (:in_listing false) leave the chat as it is.
INSERT_MESSAGE = """
WITH new_message AS (
    INSERT INTO outbox.messages (workspace_id, channel_id, chat_id, direction, type, body, payload,
                          status, wa_message_id, sent_at, delivered_at)
    VALUES (:workspace_id, CAST(:channel_id AS uuid), CAST(:chat_id AS uuid), :direction,
            :type, :body, CAST(:payload AS jsonb), :status, :wa_message_id,
            COALESCE(CAST(:sent_at AS timestamptz), now()),
            CASE WHEN :direction = 'inbound' THEN now() END)
    ON CONFLICT (channel_id, wa_message_id) WHERE wa_message_id IS NOT NULL DO NOTHING
    RETURNING id, chat_id, sent_at
),
new_message_event AS (
    -- Someone wrote to us: message.received, with what an inbox shows.
    -- A message typed on the channel's phone: message.sent.
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, message_id, payload)
    SELECT outbox.next_event_id(), :workspace_id,
           CASE WHEN :direction = 'inbound' THEN 'message.received' ELSE 'message.sent' END,
           CAST(:channel_id AS uuid), n.chat_id, n.id,
           jsonb_strip_nulls(jsonb_build_object(
               'type', CAST(:type AS text), 'body', CAST(:body AS text),
               'wa_message_id', CAST(:wa_message_id AS text),
               'from_phone', CASE WHEN :direction = 'outbound' THEN true END))
    FROM new_message n
),
reopened_event AS (
    -- Someone wrote into an archived chat: it is open again. (Every CTE
    -- reads the statement's snapshot, so this sees the chat before `bumped`.)
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, message_id, payload)
    SELECT outbox.next_event_id(), :workspace_id, 'chat.reopened', CAST(:channel_id AS uuid),
           c.id, n.id, '{"by": "inbound"}'::jsonb
    FROM new_message n
    JOIN outbox.chats c ON c.id = n.chat_id
    WHERE :counts_unread AND :in_listing AND c.status = 'archived'
),
bumped AS (
    UPDATE outbox.chats c
    SET unread_count = c.unread_count + CASE WHEN :counts_unread THEN 1 ELSE 0 END,
        status = CASE WHEN :counts_unread THEN 'active' ELSE c.status END,
        last_message_preview = CASE WHEN c.last_message_at IS NULL OR n.sent_at >= c.last_message_at
                                    THEN left(:preview, 100)
                                    ELSE c.last_message_preview END,
        last_message_at = GREATEST(c.last_message_at, n.sent_at),
        updated_at = now()
    FROM new_message n
    WHERE c.id = n.chat_id AND :in_listing
    RETURNING c.id
)
SELECT (SELECT id FROM new_message) AS message_id,
       (SELECT count(*) FROM bumped) AS chats_bumped
"""

MESSAGE_EXISTS = """
SELECT EXISTS (SELECT 1 FROM outbox.messages
               WHERE channel_id = CAST(:channel_id AS uuid) AND wa_message_id = :wa_message_id)
"""

# --------------------------------------------------------------------------
# ACTIONS on a stored message: reaction, edit, delete. Each returns whether
# the target exists (`found`; if not, the action waits in webhook_pending)
# and whether it changed anything (`applied`). Each is idempotent: a replay
# of the same action changes nothing new, and an older action arriving
# after a newer one is dropped (reactions and edits carry their time).
# --------------------------------------------------------------------------
_TARGET = """
target AS (
    SELECT id FROM outbox.messages
    WHERE channel_id = CAST(:channel_id AS uuid) AND wa_message_id = :target
)"""

# One reaction per reactor; a newer one replaces it, an empty emoji keeps a
# tombstone (emoji "") so an older reaction arriving late can't return.
APPLY_REACTION = "WITH" + _TARGET + """,
applied AS (
    UPDATE outbox.messages m
    SET reactions = m.reactions || jsonb_build_object(
            CAST(:reactor AS text),
            jsonb_build_object('emoji', CAST(:emoji AS text), 'at', CAST(:at AS float8))),
        updated_at = now()
    FROM target t
    WHERE m.id = t.id
      AND COALESCE(CAST(m.reactions -> CAST(:reactor AS text) ->> 'at' AS float8), 0)
          <= CAST(:at AS float8)
      AND m.reactions -> CAST(:reactor AS text) ->> 'emoji' IS DISTINCT FROM CAST(:emoji AS text)
    RETURNING m.id, m.workspace_id, m.channel_id, m.chat_id
),
applied_event AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, message_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'message.reaction', channel_id, chat_id, id,
           jsonb_build_object('reactor', CAST(:reactor AS text), 'emoji', CAST(:emoji AS text))
    FROM applied
)
SELECT (SELECT count(*) FROM target) AS found, (SELECT count(*) FROM applied) AS applied
"""

# The new text replaces the body, the old one joins the history; the
# content object is merged into the payload's (a caption edit keeps the
# media). A deleted message stays deleted.
APPLY_EDIT = "WITH" + _TARGET + """,
applied AS (
    UPDATE outbox.messages m
    SET edit_history = m.edit_history || jsonb_build_array(jsonb_build_object(
            'body', m.body, 'until', CAST(:at AS timestamptz))),
        body = CAST(:body AS text),
        payload = jsonb_set(m.payload, ARRAY[m.type],
                            COALESCE(m.payload -> m.type, '{}'::jsonb)
                            || CAST(:content AS jsonb)),
        edited_at = CAST(:at AS timestamptz),
        updated_at = now()
    FROM target t
    WHERE m.id = t.id
      AND m.deleted_at IS NULL
      AND (m.edited_at IS NULL OR m.edited_at < CAST(:at AS timestamptz))
      AND m.body IS DISTINCT FROM CAST(:body AS text)
    RETURNING m.id, m.workspace_id, m.channel_id, m.chat_id
),
applied_event AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, message_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'message.edited', channel_id, chat_id, id,
           jsonb_build_object('body', CAST(:body AS text))
    FROM applied
)
SELECT (SELECT count(*) FROM target) AS found, (SELECT count(*) FROM applied) AS applied
"""

# Deleted for everyone: the row and its content stay (the API hides it);
# the first deletion's time is kept.
APPLY_DELETE = "WITH" + _TARGET + """,
applied AS (
    UPDATE outbox.messages m
    SET deleted_at = CAST(:at AS timestamptz), updated_at = now()
    FROM target t
    WHERE m.id = t.id AND m.deleted_at IS NULL
    RETURNING m.id, m.workspace_id, m.channel_id, m.chat_id
),
applied_event AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, message_id)
    SELECT outbox.next_event_id(), workspace_id, 'message.deleted', channel_id, chat_id, id
    FROM applied
)
SELECT (SELECT count(*) FROM target) AS found, (SELECT count(*) FROM applied) AS applied
"""

# --------------------------------------------------------------------------
# PENDING: actions and echoes whose message is not stored yet.
# --------------------------------------------------------------------------
INSERT_PENDING = """
INSERT INTO outbox.webhook_pending
    (channel_id, wa_message_id, kind, action_key, payload, occurred_at)
VALUES (CAST(:channel_id AS uuid), :wa_message_id, :kind, :action_key, CAST(:payload AS jsonb),
        COALESCE(CAST(:occurred_at AS timestamptz), now()))
ON CONFLICT (channel_id, wa_message_id, kind, action_key) DO NOTHING
RETURNING id
"""

# Pending rows whose message exists now (taken in the order they happened),
# and rows past their time: an echo nobody claimed after :echo_seconds (a
# send by someone else with this channel's token, stored then), an action
# whose target never came after :action_seconds. SKIP LOCKED: concurrent
# callers split the work.
TAKE_PENDING = """
SELECT p.id, p.channel_id, ch.workspace_id, p.wa_message_id, p.kind, p.action_key,
       p.payload, p.occurred_at,
       EXISTS (SELECT 1 FROM outbox.messages m
               WHERE m.channel_id = p.channel_id AND m.wa_message_id = p.wa_message_id) AS found
FROM outbox.webhook_pending p
JOIN outbox.channels ch ON ch.id = p.channel_id
WHERE (CAST(:channel_id AS uuid) IS NULL OR p.channel_id = CAST(:channel_id AS uuid))
  AND (EXISTS (SELECT 1 FROM outbox.messages m
               WHERE m.channel_id = p.channel_id AND m.wa_message_id = p.wa_message_id)
       OR p.received_at < now() - make_interval(secs => CASE WHEN p.kind = 'echo'
                                                             THEN :echo_seconds
                                                             ELSE :action_seconds END))
ORDER BY p.occurred_at, p.id
LIMIT :limit
FOR UPDATE OF p SKIP LOCKED
"""

DELETE_PENDING = "DELETE FROM outbox.webhook_pending WHERE id = ANY(CAST(:ids AS bigint[]))"

PENDING_SIZE = "SELECT kind, count(*) FROM outbox.webhook_pending GROUP BY kind"

# --------------------------------------------------------------------------
# CHATS and CHANNEL SESSIONS from Whapi's own events
# --------------------------------------------------------------------------
SET_CHAT_ARCHIVED = """
WITH changed AS (
    UPDATE outbox.chats
    SET status = CASE WHEN :archived THEN 'archived' ELSE 'active' END, updated_at = now()
    WHERE channel_id = CAST(:channel_id AS uuid) AND wa_chat_id = :wa_chat_id
      AND status <> CASE WHEN :archived THEN 'archived' ELSE 'active' END
    RETURNING id, workspace_id, channel_id
),
chat_event AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, payload)
    SELECT outbox.next_event_id(), workspace_id,
           CASE WHEN :archived THEN 'chat.archived' ELSE 'chat.reopened' END, channel_id, id,
           jsonb_build_object('by', 'whatsapp')
    FROM changed
)
SELECT id FROM changed
"""

# The WhatsApp session went away (logged out, QR, ERROR): pause the channel
# so its rows wait instead of collecting 401s. A channel an operator paused
# or disabled keeps that state (its own resume must not be pre-empted).
SESSION_DOWN = """
WITH paused AS (
    UPDATE outbox.channels
    SET status = 'paused', paused_until = NULL, pause_reason = :reason, pause_cause = 'session',
        updated_at = now()
    WHERE id = CAST(:channel_id AS uuid)
      AND (status = 'active' OR (status = 'paused' AND pause_cause IN ('unauthorized', 'session')))
    RETURNING id, workspace_id
),
pause_event AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'channel.paused', id,
           jsonb_build_object('cause', 'session', 'reason', CAST(:reason AS text),
                              'paused_until', NULL)
    FROM paused
)
SELECT id FROM paused
"""

# Back to AUTH / logged in: a channel paused for its session (by a 401 or
# by SESSION_DOWN) resumes by itself; other pauses are not this event's.
SESSION_UP = """
WITH resumed AS (
    UPDATE outbox.channels
    SET status = 'active', paused_until = NULL, pause_reason = NULL, pause_cause = NULL,
        updated_at = now()
    WHERE id = CAST(:channel_id AS uuid)
      AND status = 'paused' AND pause_cause IN ('unauthorized', 'session')
    RETURNING id, workspace_id
),
resume_event AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'channel.resumed', id,
           jsonb_build_object('by', 'session')
    FROM resumed
)
SELECT id FROM resumed
"""

# --------------------------------------------------------------------------
# DEAD LETTERS: authenticated bodies we could not use, once per body.
# --------------------------------------------------------------------------
INSERT_DEAD_LETTER = """
INSERT INTO outbox.webhook_dead_letters
    (channel_id, event_type, event_method, reason, body, body_sha256)
VALUES (CAST(:channel_id AS uuid), :event_type, :event_method, :reason, :body, :body_sha256)
ON CONFLICT (channel_id, body_sha256) DO NOTHING
RETURNING id
"""
