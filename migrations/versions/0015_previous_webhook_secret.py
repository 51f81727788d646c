"""channels.previous_webhook_secret(_until): a replaced webhook secret's grace window.

`outbox channel rotate-webhook-secret` (POST /v1/channels/{id}/webhook-secret)
gives a channel a new webhook secret; the one it replaces stays here,
encrypted and bound like the current one, and is accepted until
`previous_webhook_secret_until`, while Whapi's settings are changed over.
Both NULL: there is no previous secret.

Nullable columns without a default: added without rewriting the table.

Revision ID: 0015
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("channels", sa.Column("previous_webhook_secret", sa.Text()))
    op.add_column("channels", sa.Column("previous_webhook_secret_until",
                                        sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("channels", "previous_webhook_secret_until")
    op.drop_column("channels", "previous_webhook_secret")
