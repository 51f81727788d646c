"""The team inbox's statements: chats, their threads, contacts, messages.

What the inbox services (outbox/admin/chats.py, contacts.py, messages.py)
run in the caller's session. Parameters are named and bound; a filter the
caller may leave out is a NULL (or false) parameter, so each statement is
one text. Every statement takes the caller's workspace; NULL (the CLI, an
operator) means every workspace.

Lists are keyset-paginated, newest first: a page is one index range
whatever its depth. Chats sort on CHAT_RECENCY (db/models.py: newest
message first, chats without one last) and id, served by ix_chats_inbox;
threads and message lists on (created_at, id).

Search is by the start of a contact's name (case-insensitive) or number,
on btree prefix indexes (ix_contacts_name_prefix, ix_contacts_phone_prefix):
`lower(name) LIKE 'mar%'`, `ltrim(phone, '+') LIKE '5511%'` (E.164 numbers
and group ids alike). The caller passes both patterns, neither NULL (a NULL
arm would keep the planner from combining the indexes with a BitmapOr).
"""

from __future__ import annotations

_WORKSPACE = ("(CAST(:workspace_id AS text) IS NULL"
              " OR {t}.workspace_id = CAST(:workspace_id AS text))")

_SEARCH = """(NOT CAST(:searching AS bool)
        OR lower(ct.name) LIKE lower(CAST(:name_pattern AS text))
        OR ltrim(ct.phone, '+') LIKE CAST(:digits_pattern AS text))"""

# --------------------------------------------------------------------------
# CHATS
# --------------------------------------------------------------------------

_CHAT_COLUMNS = """c.id, c.channel_id, c.wa_chat_id, c.contact_id, ct.phone, ct.name, ct.is_group,
       c.last_message_at, c.last_message_preview, c.unread_count, c.status, c.assigned_to,
       c.created_at"""

# :status is the one status listed unless :include_archived; :assigned_to a
# user, or :unassigned for chats nobody has.
_CHAT_WHERE = """(CAST(:channel_id AS uuid) IS NULL OR c.channel_id = CAST(:channel_id AS uuid))
  AND (CAST(:include_archived AS bool) OR c.status = CAST(:status AS text))
  AND (NOT CAST(:unread_only AS bool) OR c.unread_count > 0)
  AND (CAST(:is_group AS bool) IS NULL OR ct.is_group = CAST(:is_group AS bool))
  AND (CAST(:assigned_to AS uuid) IS NULL OR c.assigned_to = CAST(:assigned_to AS uuid))
  AND (NOT CAST(:unassigned AS bool) OR c.assigned_to IS NULL)
  AND (NOT CAST(:has_cursor AS bool)
       OR (COALESCE(c.last_message_at, '-infinity'::timestamptz), c.id)
          < (COALESCE(CAST(:cursor_at AS timestamptz), '-infinity'::timestamptz),
             CAST(:cursor_id AS uuid)))"""
_CHAT_ORDER = "ORDER BY COALESCE(c.last_message_at, '-infinity'::timestamptz) DESC, c.id DESC"
_CHAT_FILTERS = f"""{_CHAT_WHERE}
{_CHAT_ORDER}
LIMIT :limit"""

# The list: ix_chats_inbox in order, a page's worth.
LIST_CHATS = f"""
SELECT {_CHAT_COLUMNS}
FROM outbox.chats c
JOIN outbox.contacts ct ON ct.id = c.contact_id AND ct.workspace_id = c.workspace_id
WHERE {_WORKSPACE.format(t="c")}
  AND {_SEARCH}
  AND {_CHAT_FILTERS}
"""

# A search that matches many contacts walks the list instead, but only
# :walk rows of it per call: where the matches sit is unknown (a block of
# numbers imported together sits wherever their chats are), so an
# unbounded walk costs up to the whole list. The walk streams and stops
# as soon as the page is full; if it reaches its :walk-th row first, that
# row comes too, match or not, to say where it stopped: the next page
# starts there, so a page may hold fewer than :limit chats, even none,
# and still have a next one.
WALK_CHATS = f"""
SELECT * FROM (
    SELECT {_CHAT_COLUMNS}, ({_SEARCH}) AS hit,
           row_number() OVER ({_CHAT_ORDER}) AS walked
    FROM outbox.chats c
    JOIN outbox.contacts ct ON ct.id = c.contact_id AND ct.workspace_id = c.workspace_id
    WHERE {_WORKSPACE.format(t="c")}
      AND {_CHAT_WHERE}
    {_CHAT_ORDER}
    LIMIT :walk
) w
WHERE hit OR walked = :walk
LIMIT :limit
"""

# Whether a search matches many contacts: each arm counts up to :cap on
# its own prefix index, in the index's order, so the scan stops at :cap (a
# bitmap of both indexes would read every match first, and a plain LIMIT
# lets the planner pick a table scan when it expects many). A contact
# whose name and number both match counts twice: this only decides
# between the two plans below.
COUNT_MATCHES = f"""
SELECT (SELECT count(*) FROM (
            SELECT 1 FROM outbox.contacts ct
            WHERE {_WORKSPACE.format(t="ct")}
              AND lower(ct.name) LIKE lower(CAST(:name_pattern AS text))
            ORDER BY ct.workspace_id, lower(ct.name) USING ~<~
            LIMIT :cap) by_name)
     + (SELECT count(*) FROM (
            SELECT 1 FROM outbox.contacts ct
            WHERE {_WORKSPACE.format(t="ct")}
              AND ltrim(ct.phone, '+') LIKE CAST(:digits_pattern AS text)
            ORDER BY ct.workspace_id, ltrim(ct.phone, '+') USING ~<~
            LIMIT :cap) by_number)
"""

# A search that matches few contacts: those first (the prefix indexes),
# then their chats, one probe of ix_chats_contact_id each (LATERAL with
# LIMIT is never flattened into a hash join), sorted. Walking the list
# instead would cost where the matches sit (an old customer's number: far
# down); this costs what it matches.
SEARCH_CHATS = f"""
WITH ct AS MATERIALIZED (
    SELECT ct.id, ct.phone, ct.name, ct.is_group FROM outbox.contacts ct
    WHERE {_WORKSPACE.format(t="ct")} AND {_SEARCH}
)
SELECT {_CHAT_COLUMNS}
FROM ct
CROSS JOIN LATERAL (
    SELECT * FROM outbox.chats c WHERE c.contact_id = ct.id LIMIT 10000  -- a chat per channel
) c
WHERE {_WORKSPACE.format(t="c")}
  AND {_CHAT_FILTERS}
"""

# One chat with its contact and its latest message (the chat's newest row
# of ix_messages_chat_id_created_at).
CHAT = f"""
SELECT {_CHAT_COLUMNS}, ct.email, ct.notes, ct.tags, ct.created_at AS contact_created_at,
       lm.id AS last_id, lm.direction AS last_direction, lm.type AS last_type,
       lm.body AS last_body, lm.status AS last_status, lm.created_at AS last_created_at,
       lm.sent_at AS last_sent_at, lm.deleted_at AS last_deleted_at
FROM outbox.chats c
JOIN outbox.contacts ct ON ct.id = c.contact_id
LEFT JOIN LATERAL (
    SELECT m.id, m.direction, m.type, m.body, m.status, m.created_at, m.sent_at, m.deleted_at
    FROM outbox.messages m
    WHERE m.chat_id = c.id
    ORDER BY m.created_at DESC, m.id DESC
    LIMIT 1
) lm ON true
WHERE c.id = CAST(:chat_id AS uuid) AND {_WORKSPACE.format(t="c")}
"""

# What sending into a chat needs: where it goes.
CHAT_ADDRESS = f"""
SELECT c.id, c.channel_id, c.wa_chat_id
FROM outbox.chats c
WHERE c.id = CAST(:chat_id AS uuid) AND {_WORKSPACE.format(t="c")}
"""

# The chat as it was is read under the row lock the UPDATE would take
# anyway, so `was` is what this statement replaced (a concurrent change
# commits first, and is what we see): the event is written only for a change.
# The assignee must be an active user of the chat's workspace (null
# unassigns); otherwise nothing changes, and `assignee_ok` says why.
ASSIGN_CHAT = f"""
WITH was AS (
    SELECT c.id, c.workspace_id, c.assigned_to FROM outbox.chats c
    WHERE c.id = CAST(:chat_id AS uuid) AND {_WORKSPACE.format(t="c")}
    FOR NO KEY UPDATE
),
assignee AS (
    SELECT CAST(:assigned_to AS uuid) IS NULL OR EXISTS (
        SELECT 1 FROM outbox.users u JOIN was ON u.workspace_id = was.workspace_id
        WHERE u.id = CAST(:assigned_to AS uuid) AND u.disabled_at IS NULL
    ) AS ok
),
changed AS (
    UPDATE outbox.chats c
    SET assigned_to = CAST(:assigned_to AS uuid), updated_at = now()
    FROM was, assignee
    WHERE c.id = was.id AND assignee.ok
    RETURNING c.id, c.workspace_id, c.channel_id, c.assigned_to,
              was.assigned_to IS DISTINCT FROM c.assigned_to AS moved
),
assigned_event AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, payload)
    SELECT outbox.next_event_id(), workspace_id, 'chat.assigned', channel_id, id,
           jsonb_build_object('assigned_to', assigned_to)
    FROM changed
    WHERE moved
)
SELECT (SELECT id FROM was) AS chat_id, (SELECT ok FROM assignee) AS assignee_ok
"""

SET_CHAT_STATUS = f"""
WITH was AS (
    SELECT c.id, c.status FROM outbox.chats c
    WHERE c.id = CAST(:chat_id AS uuid) AND {_WORKSPACE.format(t="c")}
    FOR NO KEY UPDATE
),
changed AS (
    UPDATE outbox.chats c
    SET status = CAST(:status AS text), updated_at = now()
    FROM was
    WHERE c.id = was.id
    RETURNING c.id, c.workspace_id, c.channel_id, c.status, c.unread_count,
              was.status <> c.status AS moved
),
status_event AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, payload)
    SELECT outbox.next_event_id(), workspace_id,
           CASE WHEN status = 'archived' THEN 'chat.archived' ELSE 'chat.reopened' END,
           channel_id, id, jsonb_build_object('by', 'user')
    FROM changed
    WHERE moved
)
SELECT id, status, unread_count FROM changed
"""

# Unread back to 0, the chat's inbound messages read from now, and a read
# receipt to WhatsApp for the latest inbound message, queued like a send:
# an outbox row of kind 'read' on that message (the dispatcher calls
# Whapi's PUT /messages/{id}). Only when that message was unread here:
# reading a read chat again sends nothing, and of two concurrent calls
# one flips the message (the other's UPDATE re-checks the row, finds it
# read and skips), so one receipt is queued.
MARK_CHAT_READ = f"""
WITH chat AS (
    UPDATE outbox.chats c
    SET unread_count = 0, updated_at = now()
    WHERE c.id = CAST(:chat_id AS uuid) AND {_WORKSPACE.format(t="c")}
    RETURNING c.id, c.workspace_id, c.channel_id, c.wa_chat_id
),
latest AS (
    SELECT m.id, m.wa_message_id
    FROM outbox.messages m
    WHERE m.chat_id = (SELECT id FROM chat) AND m.direction = 'inbound'
    ORDER BY m.created_at DESC, m.id DESC
    LIMIT 1
),
read_messages AS (
    UPDATE outbox.messages m
    SET status = 'read', read_at = now(), updated_at = now()
    FROM chat
    WHERE m.chat_id = chat.id AND m.direction = 'inbound' AND m.status = 'delivered'
    RETURNING m.id
),
read_event AS (
    -- Every read of the chat (another tab's badge goes to 0 as well).
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, payload)
    SELECT outbox.next_event_id(), chat.workspace_id, 'chat.read', chat.channel_id, chat.id,
           jsonb_build_object('messages_read', (SELECT count(*) FROM read_messages))
    FROM chat
),
receipt AS (
    INSERT INTO outbox.outbox_messages (workspace_id, message_id, channel_id, chat_id, recipient,
                                        message_type, payload, max_attempts)
    SELECT chat.workspace_id, latest.id, chat.channel_id, chat.id, chat.wa_chat_id, 'read',
           jsonb_build_object('message_id', latest.wa_message_id), CAST(:max_attempts AS int)
    FROM chat, latest
    WHERE CAST(:receipt AS bool) AND latest.wa_message_id IS NOT NULL
      AND latest.id IN (SELECT id FROM read_messages)
    RETURNING id
),
notify AS (
    SELECT pg_notify('outbox_enqueued', '') WHERE EXISTS (SELECT 1 FROM receipt)
)
SELECT (SELECT id FROM chat) AS chat_id,
       (SELECT count(*) FROM read_messages) AS messages_read,
       (SELECT id FROM receipt) AS receipt_outbox_id,
       (SELECT count(*) FROM notify) AS notified
"""

# --------------------------------------------------------------------------
# THREADS: a chat's messages, newest first. THREAD_BEFORE pages back in
# time; THREAD_AFTER reads forward from a cursor (ascending, the caller
# turns the page around), for what arrived since.
# --------------------------------------------------------------------------
_THREAD_COLUMNS = """m.id, m.direction, m.type, m.body, m.payload, m.status, m.wa_message_id,
       m.error, m.reactions, m.edited_at, m.deleted_at, m.created_at, m.updated_at, m.sent_at,
       m.delivered_at, m.read_at"""

THREAD_BEFORE = f"""
SELECT {_THREAD_COLUMNS}
FROM outbox.messages m
WHERE m.chat_id = CAST(:chat_id AS uuid)
  AND (NOT CAST(:has_cursor AS bool)
       OR (m.created_at, m.id) < (CAST(:cursor_at AS timestamptz), CAST(:cursor_id AS uuid)))
ORDER BY m.created_at DESC, m.id DESC
LIMIT :limit
"""

THREAD_AFTER = f"""
SELECT {_THREAD_COLUMNS}
FROM outbox.messages m
WHERE m.chat_id = CAST(:chat_id AS uuid)
  AND (m.created_at, m.id) > (CAST(:cursor_at AS timestamptz), CAST(:cursor_id AS uuid))
ORDER BY m.created_at, m.id
LIMIT :limit
"""

# --------------------------------------------------------------------------
# CONTACTS: newest first (ix_contacts_recent), or found by prefix.
# --------------------------------------------------------------------------
_CONTACT_COLUMNS = ("ct.id, ct.phone, ct.name, ct.is_group, ct.email, ct.notes, ct.tags,"
                    " ct.created_at")

LIST_CONTACTS = f"""
SELECT {_CONTACT_COLUMNS}
FROM outbox.contacts ct
WHERE {_WORKSPACE.format(t="ct")}
  AND {_SEARCH}
  AND (NOT CAST(:has_cursor AS bool)
       OR (ct.created_at, ct.id) < (CAST(:cursor_at AS timestamptz), CAST(:cursor_id AS uuid)))
ORDER BY ct.created_at DESC, ct.id DESC
LIMIT :limit
"""

CONTACT = f"""
SELECT {_CONTACT_COLUMNS}
FROM outbox.contacts ct
WHERE ct.id = CAST(:contact_id AS uuid) AND {_WORKSPACE.format(t="ct")}
"""

CONTACT_CHATS = """
SELECT c.id, c.channel_id, c.wa_chat_id, c.status, c.unread_count, c.last_message_at
FROM outbox.chats c
WHERE c.contact_id = CAST(:contact_id AS uuid)
ORDER BY COALESCE(c.last_message_at, '-infinity'::timestamptz) DESC, c.id DESC
"""

# Only the fields the caller gave (:set_<field>) change.
UPDATE_CONTACT = f"""
UPDATE outbox.contacts ct
SET name = CASE WHEN CAST(:set_name AS bool) THEN CAST(:name AS text) ELSE ct.name END,
    email = CASE WHEN CAST(:set_email AS bool) THEN CAST(:email AS text) ELSE ct.email END,
    notes = CASE WHEN CAST(:set_notes AS bool) THEN CAST(:notes AS text) ELSE ct.notes END,
    tags = CASE WHEN CAST(:set_tags AS bool) THEN CAST(:tags AS text[]) ELSE ct.tags END
WHERE ct.id = CAST(:contact_id AS uuid) AND {_WORKSPACE.format(t="ct")}
RETURNING {_CONTACT_COLUMNS}
"""

# --------------------------------------------------------------------------
# MESSAGES. A message's outbox row is the one of its own kind: a read
# receipt (kind 'read') rides on the inbound message it acknowledges and is
# never "the message's" row.
# --------------------------------------------------------------------------
_OUTBOX_ROW = """LEFT JOIN LATERAL (
    SELECT o.id, o.status, o.attempts, o.max_attempts, o.last_error, o.next_attempt_at,
           o.priority
    FROM outbox.outbox_messages o
    WHERE o.message_id = m.id AND o.message_type <> 'read'
    LIMIT 1
) o ON true"""

# GET /v1/messages/{id}: the permanent record with its content, plus the
# outbox row while it exists (sent rows are pruned after a while).
MESSAGE_DETAIL = f"""
SELECT m.id, m.channel_id, m.chat_id, c.wa_chat_id, m.direction, m.type, m.status,
       m.body, m.payload, m.reactions, m.edited_at, m.deleted_at,
       m.wa_message_id, m.error, m.idempotency_key, m.created_at, m.updated_at,
       m.sent_at, m.delivered_at, m.read_at,
       o.id AS outbox_id, o.status AS outbox_status, o.attempts, o.max_attempts,
       o.last_error, o.next_attempt_at, o.priority
FROM outbox.messages m
JOIN outbox.chats c ON c.id = m.chat_id
{_OUTBOX_ROW}
WHERE m.id = CAST(:message_id AS uuid)
  AND m.workspace_id = :workspace_id
"""

# GET /v1/messages: newest first (ix_messages_workspace_id_created_at_id, or
# the chat's index with :chat_id); status 'failed' is the dead-letter view.
LIST_MESSAGES = f"""
SELECT m.id, m.channel_id, m.chat_id, c.wa_chat_id, m.direction, m.type, m.status,
       m.body, m.wa_message_id, m.error, m.created_at, m.updated_at, m.sent_at,
       o.status AS outbox_status, o.attempts, o.last_error
FROM outbox.messages m
JOIN outbox.chats c ON c.id = m.chat_id
{_OUTBOX_ROW}
WHERE m.workspace_id = :workspace_id
  AND (CAST(:status AS text) IS NULL OR m.status = CAST(:status AS text))
  AND (CAST(:chat_id AS uuid) IS NULL OR m.chat_id = CAST(:chat_id AS uuid))
  AND (CAST(:channel_id AS uuid) IS NULL OR m.channel_id = CAST(:channel_id AS uuid))
  AND (CAST(:since AS timestamptz) IS NULL OR m.created_at >= CAST(:since AS timestamptz))
  AND (CAST(:idempotency_key AS text) IS NULL
       OR m.idempotency_key = CAST(:idempotency_key AS text))
  AND (NOT CAST(:has_cursor AS bool)
       OR (m.created_at, m.id) < (CAST(:cursor_at AS timestamptz), CAST(:cursor_id AS uuid)))
ORDER BY m.created_at DESC, m.id DESC
LIMIT :limit
"""

# Cancel: one UPDATE decides against the dispatcher's claim. The claim
# locks its candidates FOR NO KEY UPDATE SKIP LOCKED and flips them to
# 'sending': whichever statement locks the row first wins, and the other
# (re-checking the row's status after the lock) leaves it alone. A dead
# letter ('failed') is cancelled the same way: against a retry, whichever
# locks first wins (a retried one is queued, so cancelled all the same).
CANCEL_MESSAGE = """
WITH cancelled AS (
    UPDATE outbox.outbox_messages o
    SET status = 'cancelled', updated_at = now()
    WHERE o.message_id = CAST(:message_id AS uuid)
      AND (CAST(:workspace_id AS text) IS NULL OR o.workspace_id = CAST(:workspace_id AS text))
      AND o.message_type <> 'read'
      AND o.status IN ('queued', 'failed')
    RETURNING o.message_id
),
message AS (
    UPDATE outbox.messages m
    SET status = 'cancelled', updated_at = now()
    FROM cancelled c
    WHERE m.id = c.message_id
    RETURNING m.id, m.workspace_id, m.channel_id, m.chat_id
),
cancelled_event AS (
    INSERT INTO outbox.events (id, workspace_id, type, channel_id, chat_id, message_id)
    SELECT outbox.next_event_id(), workspace_id, 'message.cancelled', channel_id, chat_id, id
    FROM message
)
SELECT id FROM message
"""

# Why a cancel or retry changed nothing (a new statement: its snapshot sees
# what the winner committed).
MESSAGE_STATE = f"""
SELECT m.direction, m.status, o.status AS outbox_status
FROM outbox.messages m
{_OUTBOX_ROW}
WHERE m.id = CAST(:message_id AS uuid)
  AND (CAST(:workspace_id AS text) IS NULL OR m.workspace_id = CAST(:workspace_id AS text))
"""
