"""The team inbox: assignment, contact details, search, cancelled messages.

* chats.assigned_to: the user a chat is assigned to (a plain uuid: users
  live elsewhere and may go; no foreign key);
* contacts.email, notes, tags;
* search by the start of a contact's name or number: btree prefix indexes
  (lower(name), and phone without its "+", text_pattern_ops), which every
  PostgreSQL has;
  pg_trgm is an extension a server may lack or a role may not create;
* the inbox's chat order as one index (newest message first, chats without
  one last), also per assigned user; a workspace's messages newest first;
* 'cancelled' in the message and outbox status checks. The new checks are
  a superset of the old: added NOT VALID, then validated, which reads the
  table without blocking writes.

Revision ID: 0008
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECENCY = "COALESCE(last_message_at, '-infinity'::timestamptz)"
OLD_MESSAGE = ("pending", "sent", "delivered", "read", "played", "failed", "deleted")
OLD_OUTBOX = ("queued", "sending", "sent", "failed")  # as 0006 left it


def _check(table: str, values: tuple[str, ...]) -> None:
    name = f"ck_{table}_status"
    listed = ", ".join(f"'{v}'" for v in values)
    op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK (status IN ({listed})) "
               "NOT VALID")
    op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def upgrade() -> None:
    op.add_column("chats", sa.Column("assigned_to", sa.UUID()))
    op.add_column("contacts", sa.Column("email", sa.Text()))
    op.add_column("contacts", sa.Column("notes", sa.Text()))
    op.add_column("contacts", sa.Column(
        "tags", postgresql.ARRAY(sa.Text()), server_default=sa.text("'{}'::text[]"),
        nullable=False))
    op.create_index("ix_contacts_name_prefix", "contacts",
                    ["workspace_id", sa.text("lower(name) text_pattern_ops")])
    op.create_index("ix_contacts_phone_prefix", "contacts",
                    ["workspace_id", sa.text("ltrim(phone, '+') text_pattern_ops")])
    op.create_index("ix_contacts_recent", "contacts",
                    ["workspace_id", sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index("ix_chats_inbox", "chats",
                    ["workspace_id", sa.text(f"{RECENCY} DESC"), sa.text("id DESC")])
    op.create_index("ix_chats_assigned", "chats",
                    ["workspace_id", "assigned_to", sa.text(f"{RECENCY} DESC"),
                     sa.text("id DESC")],
                    postgresql_where=sa.text("assigned_to IS NOT NULL"))
    op.create_index(op.f("ix_messages_workspace_id_created_at_id"), "messages",
                    ["workspace_id", "created_at", "id"])
    _check("messages", (*OLD_MESSAGE, "cancelled"))
    _check("outbox_messages", (*OLD_OUTBOX, "cancelled"))


def downgrade() -> None:
    # Cancelled rows have no older status to go back to: they go.
    op.execute("DELETE FROM outbox_messages WHERE status = 'cancelled'")
    op.execute("DELETE FROM messages WHERE status = 'cancelled'")
    _check("outbox_messages", OLD_OUTBOX)
    _check("messages", OLD_MESSAGE)
    op.drop_index(op.f("ix_messages_workspace_id_created_at_id"), table_name="messages")
    op.drop_index("ix_chats_assigned", table_name="chats")
    op.drop_index("ix_chats_inbox", table_name="chats")
    op.drop_index("ix_contacts_recent", table_name="contacts")
    op.drop_index("ix_contacts_phone_prefix", table_name="contacts")
    op.drop_index("ix_contacts_name_prefix", table_name="contacts")
    op.drop_column("contacts", "tags")
    op.drop_column("contacts", "notes")
    op.drop_column("contacts", "email")
    op.drop_column("chats", "assigned_to")
