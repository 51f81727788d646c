"""Initial schema: channels, tokens, contacts, chats, messages, outbox.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 02:47:54.390580
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("phone_number", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), server_default="whapi", nullable=False),
        sa.Column("base_url", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.Column("paused_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("pause_reason", sa.Text(), nullable=True),
        sa.Column("rate_limit_strikes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("webhook_secret", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('active', 'paused', 'disabled')", name=op.f("ck_channels_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
    )
    op.create_index(op.f("ix_channels_workspace_id"), "channels", ["workspace_id"], unique=False)
    op.create_table(
        "contacts",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("phone", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("is_group", sa.Boolean(), server_default="false", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("workspace_id", "phone", name=op.f("uq_contacts_workspace_id_phone")),
    )
    op.create_table(
        "channel_tokens",
        sa.Column("channel_id", sa.UUID(), nullable=False),
        sa.Column("encrypted_token", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_channel_tokens_channel_id_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("channel_id", name=op.f("pk_channel_tokens")),
    )
    op.create_table(
        "chats",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("channel_id", sa.UUID(), nullable=False),
        sa.Column("wa_chat_id", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.UUID(), nullable=False),
        sa.Column("last_message_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_message_preview", sa.Text(), nullable=True),
        sa.Column("unread_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.Text(), server_default="active", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("status IN ('active', 'archived')", name=op.f("ck_chats_status")),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_chats_channel_id_channels"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contacts.id"], name=op.f("fk_chats_contact_id_contacts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chats")),
        sa.UniqueConstraint(
            "channel_id", "wa_chat_id", name=op.f("uq_chats_channel_id_wa_chat_id")
        ),
    )
    op.create_index(op.f("ix_chats_contact_id"), "chats", ["contact_id"], unique=False)
    op.create_index(
        "ix_chats_listing",
        "chats",
        ["workspace_id", "channel_id", sa.literal_column("last_message_at DESC"), "id"],
        unique=False,
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("channel_id", sa.UUID(), nullable=False),
        sa.Column("chat_id", sa.UUID(), nullable=False),
        sa.Column("direction", sa.Text(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("wa_message_id", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "direction IN ('outbound', 'inbound')", name=op.f("ck_messages_direction")
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'delivered', 'read', 'played', 'failed', 'deleted')",
            name=op.f("ck_messages_status"),
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_messages_channel_id_channels"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name=op.f("fk_messages_chat_id_chats"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint(
            "channel_id", "wa_message_id", name=op.f("uq_messages_channel_id_wa_message_id")
        ),
    )
    op.create_index(
        op.f("ix_messages_chat_id_created_at"), "messages", ["chat_id", "created_at"], unique=False
    )
    op.create_index(
        "uq_messages_channel_idempotency_key",
        "messages",
        ["channel_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_table(
        "outbox_messages",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("workspace_id", sa.Text(), nullable=False),
        sa.Column("message_id", sa.UUID(), nullable=False),
        sa.Column("channel_id", sa.UUID(), nullable=False),
        sa.Column("chat_id", sa.UUID(), nullable=False),
        sa.Column("recipient", sa.Text(), nullable=False),
        sa.Column("message_type", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), server_default="queued", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="5", nullable=False),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claim_token", sa.UUID(), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'sending', 'sent', 'failed', 'paused')",
            name=op.f("ck_outbox_messages_status"),
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_outbox_messages_channel_id_channels"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["chat_id"],
            ["chats.id"],
            name=op.f("fk_outbox_messages_chat_id_chats"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_outbox_messages_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_messages")),
    )
    op.create_index(
        "ix_outbox_chat_unfinished",
        "outbox_messages",
        ["chat_id", "id"],
        unique=False,
        postgresql_where=sa.text("status IN ('queued', 'sending')"),
    )
    op.create_index(
        "ix_outbox_due",
        "outbox_messages",
        ["channel_id", sa.literal_column("priority DESC"), "next_attempt_at", "id"],
        unique=False,
        postgresql_where=sa.text("status = 'queued'"),
    )
    op.create_index(
        "ix_outbox_failed",
        "outbox_messages",
        ["channel_id"],
        unique=False,
        postgresql_where=sa.text("status = 'failed'"),
    )
    op.create_index(
        "ix_outbox_lease",
        "outbox_messages",
        ["locked_until"],
        unique=False,
        postgresql_where=sa.text("status = 'sending'"),
    )
    op.create_index(
        op.f("ix_outbox_messages_message_id"), "outbox_messages", ["message_id"], unique=False
    )
    op.create_index(
        "ix_outbox_sent_at",
        "outbox_messages",
        ["sent_at"],
        unique=False,
        postgresql_where=sa.text("status = 'sent'"),
    )
    op.create_index(
        "uq_outbox_channel_idempotency_key",
        "outbox_messages",
        ["channel_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    # The outbox is a hot, churning table: every row is inserted, updated two
    # or three times, then deleted by the pruner. Default autovacuum (20% of
    # the table) lets dead tuples and stale statistics pile up during a bulk
    # load; vacuum and analyse it early and without cost throttling.
    op.execute(
        "ALTER TABLE outbox_messages SET ("
        "autovacuum_vacuum_scale_factor = 0.01, "
        "autovacuum_analyze_scale_factor = 0.005, "
        "autovacuum_vacuum_insert_scale_factor = 0.01, "
        "autovacuum_vacuum_cost_delay = 0)"
    )


def downgrade() -> None:
    op.drop_index(
        "uq_outbox_channel_idempotency_key",
        table_name="outbox_messages",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_index(
        "ix_outbox_sent_at",
        table_name="outbox_messages",
        postgresql_where=sa.text("status = 'sent'"),
    )
    op.drop_index(op.f("ix_outbox_messages_message_id"), table_name="outbox_messages")
    op.drop_index(
        "ix_outbox_lease",
        table_name="outbox_messages",
        postgresql_where=sa.text("status = 'sending'"),
    )
    op.drop_index(
        "ix_outbox_failed",
        table_name="outbox_messages",
        postgresql_where=sa.text("status = 'failed'"),
    )
    op.drop_index(
        "ix_outbox_due", table_name="outbox_messages", postgresql_where=sa.text("status = 'queued'")
    )
    op.drop_index(
        "ix_outbox_chat_unfinished",
        table_name="outbox_messages",
        postgresql_where=sa.text("status IN ('queued', 'sending')"),
    )
    op.drop_table("outbox_messages")
    op.drop_index(
        "uq_messages_channel_idempotency_key",
        table_name="messages",
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_index(op.f("ix_messages_chat_id_created_at"), table_name="messages")
    op.drop_table("messages")
    op.drop_index("ix_chats_listing", table_name="chats")
    op.drop_index(op.f("ix_chats_contact_id"), table_name="chats")
    op.drop_table("chats")
    op.drop_table("channel_tokens")
    op.drop_table("contacts")
    op.drop_index(op.f("ix_channels_workspace_id"), table_name="channels")
    op.drop_table("channels")
