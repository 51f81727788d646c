"""Cheaper writes per enqueued message: fewer foreign-key checks, no index
entry for a message that has no WhatsApp id yet.

Each foreign key costs a trigger call and a key-share lookup per inserted
row; they were ~40% of the server's time in a bulk enqueue (auto_explain).
What changes, with what guards the same facts now:

* messages: one composite key (chat_id, channel_id) -> chats (id, channel_id)
  replaces the two keys to chats and channels. It is stronger: a message's
  channel must be its chat's channel. A deleted channel still cascades,
  through its chats.
* outbox_messages: only the key to its message is kept. channel_id and
  chat_id are copies of the message's (written by the same statement), and
  deleting a message, chat or channel still cascades to its outbox row.
* messages (channel_id, wa_message_id): unique where wa_message_id is set,
  so queued messages (no id yet) add no entry. NULLs never conflicted, so
  the rule is the same.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_unique_constraint(op.f("uq_chats_id_channel_id"), "chats", ["id", "channel_id"])
    op.drop_constraint(op.f("fk_messages_chat_id_chats"), "messages", type_="foreignkey")
    op.drop_constraint(op.f("fk_messages_channel_id_channels"), "messages", type_="foreignkey")
    op.create_foreign_key(
        op.f("fk_messages_chat_id_chats"), "messages", "chats",
        ["chat_id", "channel_id"], ["id", "channel_id"], ondelete="CASCADE",
    )
    op.drop_constraint(
        op.f("fk_outbox_messages_channel_id_channels"), "outbox_messages", type_="foreignkey"
    )
    op.drop_constraint(
        op.f("fk_outbox_messages_chat_id_chats"), "outbox_messages", type_="foreignkey"
    )
    op.drop_constraint(
        op.f("uq_messages_channel_id_wa_message_id"), "messages", type_="unique"
    )
    op.create_index(
        "uq_messages_channel_wa_message_id", "messages", ["channel_id", "wa_message_id"],
        unique=True, postgresql_where=sa.text("wa_message_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_messages_channel_wa_message_id", table_name="messages")
    op.create_unique_constraint(
        op.f("uq_messages_channel_id_wa_message_id"), "messages", ["channel_id", "wa_message_id"]
    )
    op.create_foreign_key(
        op.f("fk_outbox_messages_chat_id_chats"), "outbox_messages", "chats",
        ["chat_id"], ["id"], ondelete="CASCADE",
    )
    op.create_foreign_key(
        op.f("fk_outbox_messages_channel_id_channels"), "outbox_messages", "channels",
        ["channel_id"], ["id"], ondelete="CASCADE",
    )
    op.drop_constraint(op.f("fk_messages_chat_id_chats"), "messages", type_="foreignkey")
    op.create_foreign_key(
        op.f("fk_messages_channel_id_channels"), "messages", "channels",
        ["channel_id"], ["id"], ondelete="CASCADE",
    )
    op.create_foreign_key(
        op.f("fk_messages_chat_id_chats"), "messages", "chats",
        ["chat_id"], ["id"], ondelete="CASCADE",
    )
    op.drop_constraint(op.f("uq_chats_id_channel_id"), "chats", type_="unique")
