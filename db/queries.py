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
# --------------------------------------------------------------------------
ENQUEUE = """
WITH channel AS (
    SELECT id, workspace_id
    FROM channels
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
        CAST(:keys AS text[]), CAST(:priorities AS int[]), CAST(:send_ats AS timestamptz[]),
        CAST(:max_attempts AS int[])
    ) AS t(ord, message_id, channel_id, phone, wa_chat_id, is_group,
           message_type, body, payload, idempotency_key, priority, send_at, max_attempts)
    JOIN channel ON channel.id = t.channel_id
    WHERE (SELECT count(*) FROM channel) = CAST(:channel_count AS int)
),
existing AS (
    SELECT i.ord, m.id AS message_id, m.chat_id
    FROM input i
    JOIN messages m ON m.channel_id = i.channel_id AND m.idempotency_key = i.idempotency_key
),
fresh AS (
    SELECT i.* FROM input i WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.ord = i.ord)
),
new_contacts AS (
    INSERT INTO contacts (workspace_id, phone, is_group)
    SELECT DISTINCT workspace_id, phone, is_group FROM fresh
    ON CONFLICT (workspace_id, phone) DO NOTHING
    RETURNING id, workspace_id, phone
),
contact_ids AS (
    SELECT id, workspace_id, phone, true AS created FROM new_contacts
    UNION ALL
    SELECT c.id, c.workspace_id, c.phone, false
    FROM contacts c
    JOIN (SELECT DISTINCT workspace_id, phone FROM fresh) f
      ON f.workspace_id = c.workspace_id AND f.phone = c.phone
),
new_chats AS (
    INSERT INTO chats (workspace_id, channel_id, wa_chat_id, contact_id)
    SELECT DISTINCT ON (f.channel_id, f.wa_chat_id) f.workspace_id, f.channel_id, f.wa_chat_id, ci.id
    FROM fresh f
    JOIN contact_ids ci ON ci.workspace_id = f.workspace_id AND ci.phone = f.phone
    ON CONFLICT (channel_id, wa_chat_id) DO NOTHING
    RETURNING id, channel_id, wa_chat_id
),
chat_ids AS (
    SELECT id, channel_id, wa_chat_id, true AS created FROM new_chats
    UNION ALL
    SELECT c.id, c.channel_id, c.wa_chat_id, false
    FROM chats c
    JOIN (SELECT DISTINCT channel_id, wa_chat_id FROM fresh) f
      ON f.channel_id = c.channel_id AND f.wa_chat_id = c.wa_chat_id
),
new_messages AS (
    INSERT INTO messages (id, workspace_id, channel_id, chat_id, direction, type, body,
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
    INSERT INTO outbox_messages (workspace_id, message_id, channel_id, chat_id, recipient,
                                 message_type, payload, priority, next_attempt_at,
                                 max_attempts, idempotency_key)
    SELECT f.workspace_id, nm.id, f.channel_id, nm.chat_id, f.wa_chat_id, f.message_type,
           f.payload, f.priority, COALESCE(f.send_at, now()), f.max_attempts, f.idempotency_key
    FROM new_messages nm
    JOIN fresh f ON f.message_id = nm.id
    ORDER BY f.ord
    RETURNING id, message_id
),
notify AS (
    SELECT pg_notify('outbox_enqueued', '') AS n WHERE EXISTS (SELECT 1 FROM new_outbox)
)
SELECT i.ord,
       COALESCE(nm.id, e.message_id) AS message_id,
       COALESCE(nob.id, old_ob.id) AS outbox_id,
       COALESCE(nm.chat_id, e.chat_id) AS chat_id,
       (e.message_id IS NOT NULL) AS existing,
       COALESCE(ch.created, false) AS chat_created,
       COALESCE(ct.created, false) AS contact_created,
       (SELECT count(*) FROM notify) AS notified
FROM input i
LEFT JOIN existing e ON e.ord = i.ord
LEFT JOIN new_messages nm ON nm.id = i.message_id
LEFT JOIN new_outbox nob ON nob.message_id = nm.id
LEFT JOIN outbox_messages old_ob ON old_ob.message_id = e.message_id
LEFT JOIN chat_ids ch ON ch.channel_id = i.channel_id AND ch.wa_chat_id = i.wa_chat_id
LEFT JOIN contact_ids ct ON ct.workspace_id = i.workspace_id AND ct.phone = i.phone
"""

# Why an enqueue wrote nothing: which channels are missing or disabled.
CHANNELS_FOR_ENQUEUE = """
SELECT id, status
FROM channels
WHERE id = ANY(CAST(:channel_ids AS uuid[]))
  AND (CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text))
"""
