"""Whapi's real traffic: actions on messages, events waiting for their
message, webhook dead letters, one strike per rate-limit event.

* messages: reactions (one per reactor), edit history, edited_at and
  deleted_at. A reaction, edit or delete is an action on a message, never a
  message of its own.
* webhook_pending: reactions, edits, deletes and echoes of our own sends
  whose message is not stored yet (Whapi reorders, and an echo can beat the
  dispatcher's record of the id).
* webhook_dead_letters: authenticated bodies we could not use, kept raw and
  answered 200 (Whapi retries anything else forever).
* webhook_status_backlog.error: a `failed` status's reason (Whapi's
  `errors`), so the message records why, also when the status came early.
* channels.rate_limited_at: when the current rate-limit event began, so the
  429s of requests already in flight don't escalate the pause;
  channels.pause_cause: why a channel is paused, so a channel paused for a
  logged-out session resumes when Whapi reports it back.

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("channels", sa.Column("rate_limited_at", sa.DateTime(timezone=True)))
    op.add_column("channels", sa.Column("pause_cause", sa.Text()))
    op.add_column("webhook_status_backlog", sa.Column("error", sa.Text()))
    # Constant defaults: PostgreSQL adds these columns without rewriting the table.
    op.add_column("messages", sa.Column(
        "reactions", postgresql.JSONB(astext_type=sa.Text()),
        server_default=sa.text("'{}'::jsonb"), nullable=False))
    op.add_column("messages", sa.Column(
        "edit_history", postgresql.JSONB(astext_type=sa.Text()),
        server_default=sa.text("'[]'::jsonb"), nullable=False))
    op.add_column("messages", sa.Column("edited_at", sa.DateTime(timezone=True)))
    op.add_column("messages", sa.Column("deleted_at", sa.DateTime(timezone=True)))

    op.create_table(
        "webhook_pending",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("channel_id", sa.UUID(), nullable=False),
        sa.Column("wa_message_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("action_key", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True),
                  server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("kind IN ('reaction', 'edit', 'delete', 'echo')",
                           name=op.f("ck_webhook_pending_kind")),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], ondelete="CASCADE",
                                name=op.f("fk_webhook_pending_channel_id_channels")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_pending")),
        sa.UniqueConstraint("channel_id", "wa_message_id", "kind", "action_key",
                            name=op.f("uq_webhook_pending_channel_id_wa_message_id_kind_action_key")),
    )
    op.create_index(op.f("ix_webhook_pending_received_at"), "webhook_pending", ["received_at"])

    op.create_table(
        "webhook_dead_letters",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("channel_id", sa.UUID(), nullable=False),
        sa.Column("event_type", sa.Text()),
        sa.Column("event_method", sa.Text()),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("body_sha256", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True),
                  server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"], ondelete="CASCADE",
                                name=op.f("fk_webhook_dead_letters_channel_id_channels")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_dead_letters")),
        sa.UniqueConstraint("channel_id", "body_sha256",
                            name=op.f("uq_webhook_dead_letters_channel_id_body_sha256")),
    )
    op.create_index(op.f("ix_webhook_dead_letters_received_at"), "webhook_dead_letters",
                    ["received_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_dead_letters_received_at"), table_name="webhook_dead_letters")
    op.drop_table("webhook_dead_letters")
    op.drop_index(op.f("ix_webhook_pending_received_at"), table_name="webhook_pending")
    op.drop_table("webhook_pending")
    op.drop_column("messages", "deleted_at")
    op.drop_column("messages", "edited_at")
    op.drop_column("messages", "edit_history")
    op.drop_column("messages", "reactions")
    op.drop_column("webhook_status_backlog", "error")
    op.drop_column("channels", "pause_cause")
    op.drop_column("channels", "rate_limited_at")
