"""ix_outbox_cancelled: the pruner finds old cancelled outbox rows.

Cancelled rows are no longer work (the message row keeps `cancelled`), so
the pruner deletes them after the same horizon as sent rows. A partial
index: only cancelled rows are in it, built CONCURRENTLY (writes to the
queue table go on: migrations/online.py).

Revision ID: 0013
Revises: 0008
"""

from collections.abc import Sequence

from alembic import op

from outbox.migrations.online import create_index_online, online

revision: str = "0013"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with online() as schema:
        create_index_online(schema, "ix_outbox_cancelled", "outbox_messages", ["updated_at"],
                            where="status = 'cancelled'")


def downgrade() -> None:
    op.drop_index("ix_outbox_cancelled", table_name="outbox_messages")
