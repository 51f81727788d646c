"""outbox_messages.send_started_at: when the row's request started.

The dispatcher sets it (in batches) just before a claimed row's request
goes out; the rescuer gives back the attempt of an expired-lease row whose
request never started (its worker died with the row still waiting for a
send slot). Rows `sending` at upgrade were claimed by a dispatcher that
did not record starts: they count as started (their attempt stays spent).

A nullable column without a default: added without rewriting the table.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox_messages",
                  sa.Column("send_started_at", sa.DateTime(timezone=True)))
    op.execute("UPDATE outbox_messages SET send_started_at = now() WHERE status = 'sending'")


def downgrade() -> None:
    op.drop_column("outbox_messages", "send_started_at")
