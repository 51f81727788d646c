"""The outbox status `paused` goes: nothing ever wrote it.

A paused channel pauses its rows by the claim's channel filter, never by
their status, so the CHECK constraint allowed a value no code path used.
Any row that holds it anyway (written by hand) goes back to `queued`, where
the claim finds it; then the constraint lists the four statuses of
`outbox.states.OutboxStatus`. Downgrade allows `paused` again.

The value lists are written out, not taken from the enum: a revision
records what it did, whatever the enum later holds.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "ck_outbox_messages_status"


def upgrade() -> None:
    op.execute(sa.text(
        "UPDATE outbox_messages SET status = 'queued', updated_at = now() "
        "WHERE status = 'paused'"))
    op.drop_constraint(op.f(CONSTRAINT), "outbox_messages", type_="check")
    op.create_check_constraint(op.f(CONSTRAINT), "outbox_messages",
                               "status IN ('queued', 'sending', 'sent', 'failed')")


def downgrade() -> None:
    op.drop_constraint(op.f(CONSTRAINT), "outbox_messages", type_="check")
    op.create_check_constraint(op.f(CONSTRAINT), "outbox_messages",
                               "status IN ('queued', 'sending', 'sent', 'failed', 'paused')")
