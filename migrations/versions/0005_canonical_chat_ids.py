"""Chats and contacts stored before Whapi's chat-id rules, made canonical.

Until 0004, Mexican numbers were addressed as `52…@s.whatsapp.net` (Whapi
routes them as `521…`, so sends were likely lost), Argentine mobiles
without their 9, and Brazilian numbers with the 9th digit regardless of the
area code; a Brazilian reply from the 8-digit form opened a second contact
and chat. outbox.phone.normalize_recipient now gives one (phone, chat id)
per person; this rewrites what is stored to match it:

* a chat whose WhatsApp id is not canonical takes the canonical one; when a
  chat with that id already exists on the channel (the reply's), the two
  merge: messages and queued rows move over, unread counts add up, the
  newer last message wins;
* a chat's contact becomes the contact of the canonical phone (created by
  renaming when there is none); contacts left without a chat are removed;
* queued rows get the canonical recipient, so they go where Whapi delivers.

Only person chats of countries with a rule (52, 54, 55) are looked at.
Not reversible (the old forms were wrong): downgrade leaves the data.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from outbox.errors import InvalidPhone
from outbox.phone import normalize_recipient

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CANDIDATES = sa.text("""
SELECT c.id, c.workspace_id, c.channel_id, c.wa_chat_id, c.contact_id, ct.phone
FROM chats c JOIN contacts ct ON ct.id = c.contact_id
WHERE c.wa_chat_id ~ '^5[245][0-9]+@s\\.whatsapp\\.net$'
ORDER BY c.created_at, c.id
""")
CONTACT_BY_PHONE = sa.text(
    "SELECT id FROM contacts WHERE workspace_id = :ws AND phone = :phone")
RENAME_CONTACT = sa.text("UPDATE contacts SET phone = :phone WHERE id = :id")
SET_CHAT_CONTACT = sa.text("UPDATE chats SET contact_id = :contact WHERE id = :id")
CHAT_BY_WA_ID = sa.text(
    "SELECT id FROM chats WHERE channel_id = :channel AND wa_chat_id = :wa AND id <> :id")
RENAME_CHAT = sa.text("UPDATE chats SET wa_chat_id = :wa, updated_at = now() WHERE id = :id")
MERGE_CHAT = sa.text("""
WITH moved AS (
    UPDATE messages SET chat_id = :target WHERE chat_id = :source RETURNING id
),
queued AS (
    UPDATE outbox_messages SET chat_id = :target WHERE chat_id = :source RETURNING id
),
source AS (
    SELECT unread_count, last_message_at, last_message_preview, status
    FROM chats WHERE id = :source
)
UPDATE chats t
SET unread_count = t.unread_count + s.unread_count,
    last_message_preview = CASE WHEN t.last_message_at IS NULL
                                  OR s.last_message_at > t.last_message_at
                                THEN s.last_message_preview
                                ELSE t.last_message_preview END,
    last_message_at = GREATEST(t.last_message_at, s.last_message_at),
    status = CASE WHEN 'active' IN (t.status, s.status) THEN 'active' ELSE t.status END,
    updated_at = now()
FROM source s
WHERE t.id = :target
""")
DELETE_CHAT = sa.text("DELETE FROM chats WHERE id = :id")
SET_RECIPIENT = sa.text("UPDATE outbox_messages SET recipient = :wa WHERE chat_id = :chat")
DELETE_ORPHAN_CONTACTS = sa.text("""
DELETE FROM contacts ct
WHERE ct.id = ANY(CAST(:ids AS uuid[]))
  AND NOT EXISTS (SELECT 1 FROM chats c WHERE c.contact_id = ct.id)
""")


def upgrade() -> None:
    conn = op.get_bind()
    left_behind: list[str] = []
    for chat in conn.execute(CANDIDATES).all():
        try:
            canonical = normalize_recipient(chat.wa_chat_id)
        except InvalidPhone:
            continue  # not a number we can read: leave it as it is
        if canonical.phone != chat.phone:
            contact = conn.execute(CONTACT_BY_PHONE, {
                "ws": chat.workspace_id, "phone": canonical.phone}).scalar_one_or_none()
            if contact is None:
                conn.execute(RENAME_CONTACT, {"phone": canonical.phone, "id": chat.contact_id})
            else:
                conn.execute(SET_CHAT_CONTACT, {"contact": contact, "id": chat.id})
                left_behind.append(str(chat.contact_id))
        if canonical.wa_chat_id == chat.wa_chat_id:
            continue
        target = conn.execute(CHAT_BY_WA_ID, {
            "channel": chat.channel_id, "wa": canonical.wa_chat_id, "id": chat.id,
        }).scalar_one_or_none()
        if target is None:
            conn.execute(RENAME_CHAT, {"wa": canonical.wa_chat_id, "id": chat.id})
            conn.execute(SET_RECIPIENT, {"wa": canonical.wa_chat_id, "chat": chat.id})
        else:
            conn.execute(MERGE_CHAT, {"source": chat.id, "target": target})
            conn.execute(DELETE_CHAT, {"id": chat.id})
            conn.execute(SET_RECIPIENT, {"wa": canonical.wa_chat_id, "chat": target})
    if left_behind:
        conn.execute(DELETE_ORPHAN_CONTACTS, {"ids": left_behind})


def downgrade() -> None:
    """The old forms were wrong: there is nothing to go back to."""
