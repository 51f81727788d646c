"""SQLAlchemy 2 typed models: the schema as Python sees it.

The Alembic migrations create exactly this (a test compares them).
Hot-path SQL (claim, complete, rescue, enqueue) lives in `db/queries.py`,
readable as SQL; the models serve the ORM-shaped work (CLI, API, tests).

Every row carries `workspace_id`, and every query filters by it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEFAULT_WORKSPACE = "default"

CHANNEL_STATUSES = ("active", "paused", "disabled")
CHAT_STATUSES = ("active", "archived")
MESSAGE_STATUSES = ("pending", "sent", "delivered", "read", "played", "failed", "deleted")
OUTBOX_STATUSES = ("queued", "sending", "sent", "failed", "paused")
DIRECTIONS = ("outbound", "inbound")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=text("now()"))


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Channel(Base):
    __tablename__ = "channels"
    __table_args__ = (
        CheckConstraint(_in("status", CHANNEL_STATUSES), name="status"),
        Index(None, "workspace_id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    phone_number: Mapped[str] = mapped_column(Text, nullable=False)
    provider: Mapped[str] = mapped_column(Text, nullable=False, server_default="whapi")
    base_url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="active")
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pause_reason: Mapped[str | None] = mapped_column(Text)
    # Consecutive 429s without a success in between: drives the escalating pause.
    rate_limit_strikes: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # Whapi signs nothing: this secret, sent back in a custom header, is how
    # webhooks prove they come from the channel's configuration.
    webhook_secret: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class ChannelToken(Base):
    __tablename__ = "channel_tokens"

    channel_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    # salt:iv:authTag:ciphertext, hex (outbox/crypto.py). Never the token itself.
    encrypted_token: Mapped[str] = mapped_column(Text, nullable=False)
    key_id: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created()


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("workspace_id", "phone"),)

    id: Mapped[uuid.UUID] = _uuid_pk()
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    phone: Mapped[str] = mapped_column(Text, nullable=False)  # E.164, or a group id
    name: Mapped[str | None] = mapped_column(Text)
    is_group: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    created_at: Mapped[datetime] = _created()


class Chat(Base):
    __tablename__ = "chats"
    __table_args__ = (
        UniqueConstraint("channel_id", "wa_chat_id"),
        # The target of messages' (chat_id, channel_id) key (migration 0003).
        UniqueConstraint("id", "channel_id"),
        CheckConstraint(_in("status", CHAT_STATUSES), name="status"),
        Index(None, "contact_id"),
        Index("ix_chats_listing", "workspace_id", "channel_id", text("last_message_at DESC"), "id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    channel_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("channels.id", ondelete="CASCADE"), nullable=False
    )
    wa_chat_id: Mapped[str] = mapped_column(Text, nullable=False)
    contact_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("contacts.id"), nullable=False
    )
    last_message_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_message_preview: Mapped[str | None] = mapped_column(Text)
    unread_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="active")
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Message(Base):
    """One row per message, both directions; the permanent record."""

    __tablename__ = "messages"
    __table_args__ = (
        # Unique where set: a queued message (no WhatsApp id yet) adds no entry.
        Index(
            "uq_messages_channel_wa_message_id",
            "channel_id",
            "wa_message_id",
            unique=True,
            postgresql_where=text("wa_message_id IS NOT NULL"),
        ),
        # One key checks both: the chat exists and is on the message's
        # channel (a deleted channel cascades through its chats). One
        # foreign-key trigger per row instead of two (migration 0003).
        ForeignKeyConstraint(
            ["chat_id", "channel_id"], ["chats.id", "chats.channel_id"], ondelete="CASCADE"
        ),
        CheckConstraint(_in("status", MESSAGE_STATUSES), name="status"),
        CheckConstraint(_in("direction", DIRECTIONS), name="direction"),
        # Idempotency lives here (not only on the outbox row) so it outlives
        # the pruning of sent outbox rows.
        Index(
            "uq_messages_channel_idempotency_key",
            "channel_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(None, "chat_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    channel_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    chat_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    direction: Mapped[str] = mapped_column(Text, nullable=False)
    type: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    status: Mapped[str] = mapped_column(Text, nullable=False)
    wa_message_id: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutboxMessage(Base):
    """The work queue. Kept small: sent rows are pruned in batches."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        CheckConstraint(_in("status", OUTBOX_STATUSES), name="status"),
        # Due work, per channel, in claim order. Partial: the table's sent
        # rows (millions before pruning) never enter this index.
        Index(
            "ix_outbox_due",
            "channel_id",
            text("priority DESC"),
            "next_attempt_at",
            "id",
            postgresql_where=text("status = 'queued'"),
        ),
        # Head-of-line per chat: "is there an earlier unfinished row?"
        Index(
            "ix_outbox_chat_unfinished",
            "chat_id",
            "id",
            postgresql_where=text("status IN ('queued', 'sending')"),
        ),
        Index("ix_outbox_lease", "locked_until", postgresql_where=text("status = 'sending'")),
        Index("ix_outbox_sent_at", "sent_at", postgresql_where=text("status = 'sent'")),
        Index("ix_outbox_failed", "channel_id", postgresql_where=text("status = 'failed'")),
        Index(
            "uq_outbox_channel_idempotency_key",
            "channel_id",
            "idempotency_key",
            unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index(None, "message_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    message_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("messages.id", ondelete="CASCADE"), nullable=False
    )
    # Copies of the message's (same statement), for the claim's indexes; the
    # message's foreign key guards them and cascades (migration 0003).
    channel_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    chat_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), nullable=False)
    # The chat's WhatsApp id, copied so the dispatcher's claim needs no join.
    recipient: Mapped[str] = mapped_column(Text, nullable=False)
    message_type: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False, server_default="queued")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="5")
    priority: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    claim_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- HTTP service: API keys and early webhook statuses (migration 0002) -------


class ApiKey(Base):
    """A workspace's key for the HTTP API. Only a SHA-256 of the key is kept.

    The key reads `wo_<prefix>_<secret>`: `prefix` (not secret) finds the row,
    then the hashes are compared in constant time.
    """

    __tablename__ = "api_keys"
    __table_args__ = (UniqueConstraint("prefix"), Index(None, "workspace_id"))

    id: Mapped[uuid.UUID] = _uuid_pk()
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str | None] = mapped_column(Text)
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    key_hash: Mapped[str] = mapped_column(Text, nullable=False)  # hex SHA-256 of the whole key
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookStatusBacklog(Base):
    """Status webhooks for WhatsApp ids we don't know yet.

    Whapi can report `sent` before the dispatcher has recorded the id it got
    back; such statuses wait here until the id shows up (or they expire).
    """

    __tablename__ = "webhook_status_backlog"
    __table_args__ = (
        UniqueConstraint("channel_id", "wa_message_id", "status"),
        Index(None, "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    channel_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("channels.id", ondelete="CASCADE"), nullable=False
    )
    wa_message_id: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False)
    status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = _created()
