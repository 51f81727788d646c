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
* 'cancelled' in the message and outbox status checks.

Locks, on tables that may hold millions of rows (migrations/online.py): the
columns are catalog changes (nullable, or a constant default), each a
moment's ACCESS EXCLUSIVE lock; the indexes are built CONCURRENTLY, writes
going on. Each status check is replaced by a superset, added NOT VALID
(a moment's ACCESS EXCLUSIVE lock, held to that transaction's commit), and
validated after the commit, under SHARE UPDATE EXCLUSIVE: the table is read
with writes going on. (Validated in the same transaction, as this revision
first did, the scan ran under the ADD's ACCESS EXCLUSIVE lock: no reads or
writes until it finished.)

Revision ID: 0008
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from outbox.migrations.online import create_index_online, online

revision: str = "0008"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RECENCY = "COALESCE(last_message_at, '-infinity'::timestamptz)"
OLD_MESSAGE = ("pending", "sent", "delivered", "read", "played", "failed", "deleted")
OLD_OUTBOX = ("queued", "sending", "sent", "failed")  # as 0006 left it


INDEXES: list[tuple[str, str, list[str | sa.TextClause], str | None]] = [
    ("ix_contacts_name_prefix", "contacts",
     ["workspace_id", sa.text("lower(name) text_pattern_ops")], None),
    ("ix_contacts_phone_prefix", "contacts",
     ["workspace_id", sa.text("ltrim(phone, '+') text_pattern_ops")], None),
    ("ix_contacts_recent", "contacts",
     ["workspace_id", sa.text("created_at DESC"), sa.text("id DESC")], None),
    ("ix_chats_inbox", "chats",
     ["workspace_id", sa.text(f"{RECENCY} DESC"), sa.text("id DESC")], None),
    ("ix_chats_assigned", "chats",
     ["workspace_id", "assigned_to", sa.text(f"{RECENCY} DESC"), sa.text("id DESC")],
     "assigned_to IS NOT NULL"),
    ("ix_messages_workspace_id_created_at_id", "messages",
     ["workspace_id", "created_at", "id"], None),
]


def _replace_check(table: str, values: tuple[str, ...]) -> None:
    """The status check of `table`, now allowing `values`, NOT VALID (for
    rows written from now on); `_validate` checks the rows already there."""
    name = f"ck_{table}_status"
    listed = ", ".join(f"'{v}'" for v in values)
    op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
    op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK (status IN ({listed})) "
               "NOT VALID")


def _validate(table: str, schema: str | None = None) -> None:
    prefix = f"{schema}." if schema else ""
    op.execute(f"ALTER TABLE {prefix}{table} VALIDATE CONSTRAINT ck_{table}_status")


def upgrade() -> None:
    # Run again after a failure (see migrations/online.py), each step finds
    # its work done or does it.
    with online() as schema:
        op.execute(f"ALTER TABLE {schema}.chats ADD COLUMN IF NOT EXISTS assigned_to uuid")
        op.execute(f"ALTER TABLE {schema}.contacts ADD COLUMN IF NOT EXISTS email text")
        op.execute(f"ALTER TABLE {schema}.contacts ADD COLUMN IF NOT EXISTS notes text")
        op.execute(f"ALTER TABLE {schema}.contacts ADD COLUMN IF NOT EXISTS tags text[] "
                   "DEFAULT '{}'::text[] NOT NULL")
        for name, table, columns, where in INDEXES:
            create_index_online(schema, name, table, columns, where=where)
    _replace_check("messages", (*OLD_MESSAGE, "cancelled"))
    _replace_check("outbox_messages", (*OLD_OUTBOX, "cancelled"))
    with online() as schema:
        _validate("messages", schema)
        _validate("outbox_messages", schema)


def downgrade() -> None:
    # Cancelled rows have no older status to go back to: they go.
    op.execute("DELETE FROM outbox_messages WHERE status = 'cancelled'")
    op.execute("DELETE FROM messages WHERE status = 'cancelled'")
    # A downgrade is rare and runs in one transaction: validated at once.
    for table, values in (("outbox_messages", OLD_OUTBOX), ("messages", OLD_MESSAGE)):
        _replace_check(table, values)
        _validate(table)
    for name, table, _, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
    op.drop_column("contacts", "tags")
    op.drop_column("contacts", "notes")
    op.drop_column("contacts", "email")
    op.drop_column("chats", "assigned_to")
