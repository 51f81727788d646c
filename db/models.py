"""SQLAlchemy 2 typed models: the schema as Python sees it.

The Alembic migrations create exactly this (a test compares them).
The statements themselves are SQL, named by concern: the queue's in
`db/queries.py`, the webhooks' in `db/webhook_queries.py`, the admin
services' in `db/admin_queries.py`, the gauges' in `db/metrics_queries.py`.
The models are the schema the migrations are checked against, and what
rows load into where a caller wants objects (tests, `get_channel`).

Every row carries `workspace_id`, and every query filters by it.
"""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from outbox.db.schema import DEFAULT_SCHEMA
from outbox.db.states import (
    ChannelStatus,
    ChatStatus,
    DeliveryStatus,
    Direction,
    EndpointStatus,
    EventType,
    MessageStatus,
    OutboxStatus,
    PendingKind,
    Role,
    Scope,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

DEFAULT_WORKSPACE = "default"

#: The inbox's chat order: newest message first, chats without one last. As
#: one expression, a page and the cursor after it are one index range
#: (DESC NULLS LAST over two columns is not).
CHAT_RECENCY = "COALESCE(last_message_at, '-infinity'::timestamptz)"

def _in(column: str, values: type[enum.StrEnum]) -> str:
    """A CHECK that the column holds one of the enum's values (db/states.py)."""
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )


def _created() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=text("now()"))


class Base(DeclarativeBase):
    metadata = MetaData(schema=DEFAULT_SCHEMA, naming_convention=NAMING)


class Channel(Base):
    __tablename__ = "channels"
    __table_args__ = (
        CheckConstraint(_in("status", ChannelStatus), name="status"),
        Index(None, "workspace_id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    phone_number: Mapped[str] = mapped_column(Text, nullable=False)
    provider: Mapped[str] = mapped_column(Text, nullable=False, server_default="whapi")
    base_url: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, nullable=False,
                                        server_default=ChannelStatus.ACTIVE.value)
    paused_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    pause_reason: Mapped[str | None] = mapped_column(Text)
    # Rate-limit events (not 429 answers) without a success in between:
    # drives the escalating pause.
    rate_limit_strikes: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # When the current rate-limit event began: 429s to requests sent before
    # it belong to it (migration 0004).
    rate_limited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Why a channel is paused, as a machine code (PauseCause): a channel
    # paused because its WhatsApp session logged out resumes by itself when
    # Whapi reports it authorised again; one a human paused does not.
    pause_cause: Mapped[str | None] = mapped_column(Text)
    # Whapi signs nothing: this secret, sent back in a custom header, is how
    # webhooks prove they come from the channel's configuration.
    webhook_secret: Mapped[str] = mapped_column(Text, nullable=False)
    # The secret a rotation replaced (encrypted like webhook_secret),
    # accepted until previous_webhook_secret_until (migration 0015).
    previous_webhook_secret: Mapped[str | None] = mapped_column(Text)
    previous_webhook_secret_until: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True))
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


#: When a channel has a limit (ChannelPacing.paced, generated).
PACED = ("per_second IS NOT NULL OR per_minute IS NOT NULL OR per_day IS NOT NULL "
         "OR new_chats_per_day IS NOT NULL OR chat_gap_seconds IS NOT NULL "
         "OR warmup_start IS NOT NULL")


class ChannelPacing(Base):
    """A channel's send limits and the budget that enforces them (migration
    0011). No row, or a row with no limit: unlimited. The limits are the
    operator's (outbox/admin/pacing.py); the budget columns are written by
    the claim alone (db/queries.py CLAIM), so every dispatcher shares them."""

    __tablename__ = "channel_pacing"
    __table_args__ = (
        CheckConstraint("per_second > 0 AND burst >= 1 OR per_second IS NULL", name="rate"),
        CheckConstraint(
            "(per_minute IS NULL OR per_minute >= 1) AND (per_day IS NULL OR per_day >= 1) "
            "AND (new_chats_per_day IS NULL OR new_chats_per_day >= 0) "
            "AND (chat_gap_seconds IS NULL OR chat_gap_seconds > 0) "
            "AND (typing_time_seconds IS NULL OR typing_time_seconds BETWEEN 0 AND 60)",
            name="limits"),
        CheckConstraint(
            "warmup_start IS NULL OR (warmup_start >= 1 AND warmup_factor >= 1 "
            "AND warmup_ceiling >= warmup_start AND warmup_from IS NOT NULL)",
            name="warmup"),
    )

    channel_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True)
    # Limits (NULL: none). A token bucket: `per_second` refill, `burst` deep.
    per_second: Mapped[float | None] = mapped_column(Float)
    burst: Mapped[int | None] = mapped_column(Integer)
    per_minute: Mapped[int | None] = mapped_column(Integer)  # per clock minute
    per_day: Mapped[int | None] = mapped_column(Integer)  # per day in `timezone`
    new_chats_per_day: Mapped[int | None] = mapped_column(Integer)
    chat_gap_seconds: Mapped[float | None] = mapped_column(Float)
    typing_time_seconds: Mapped[int | None] = mapped_column(Integer)  # Whapi's typing_time
    timezone: Mapped[str] = mapped_column(Text, nullable=False, server_default="UTC")
    # Warm-up: the daily cap is warmup_start * warmup_factor**(days since
    # warmup_from), up to warmup_ceiling (and never above per_day).
    warmup_start: Mapped[int | None] = mapped_column(Integer)
    warmup_factor: Mapped[float | None] = mapped_column(Float)
    warmup_ceiling: Mapped[int | None] = mapped_column(Integer)
    warmup_from: Mapped[date | None] = mapped_column(Date)
    # Whether any limit is set: the claim locks only these budgets.
    paced: Mapped[bool] = mapped_column(Boolean, Computed(PACED, persisted=True), nullable=False)
    # The budget (the claim's): tokens as of refilled_at (NULL: a full
    # bucket); rows claimed in the clock minute minute_start; rows and new
    # chats claimed on `day`.
    tokens: Mapped[float | None] = mapped_column(Float)
    refilled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    minute_start: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    minute_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    day: Mapped[date | None] = mapped_column(Date)
    day_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    day_new_chats: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
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
    __table_args__ = (
        UniqueConstraint("workspace_id", "phone"),
        # Search by the start of a name or number (migration 0008): btree
        # prefix indexes, which every PostgreSQL has (pg_trgm is an extension
        # a server may lack or a role may not be allowed to create).
        # text_pattern_ops: LIKE 'abc%' uses them whatever the collation.
        Index("ix_contacts_recent", "workspace_id", text("created_at DESC"), text("id DESC")),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    phone: Mapped[str] = mapped_column(Text, nullable=False)  # E.164, or a group id
    name: Mapped[str | None] = mapped_column(Text)
    is_group: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default="false")
    email: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{}'::text[]"))
    created_at: Mapped[datetime] = _created()


# Expressions with an operator class: declared beside the model, where the
# column can be named (and labelled for postgresql_ops). The number's is
# without its "+": one prefix finds E.164 numbers and group ids, and an
# equality probe on phone keeps using the unique index.
Index("ix_contacts_name_prefix", Contact.workspace_id,
      func.lower(Contact.name).label("lower_name"),
      postgresql_ops={"lower_name": "text_pattern_ops"})
Index("ix_contacts_phone_prefix", Contact.workspace_id,
      func.ltrim(Contact.phone, "+").label("phone_digits"),
      postgresql_ops={"phone_digits": "text_pattern_ops"})


class Chat(Base):
    __tablename__ = "chats"
    __table_args__ = (
        UniqueConstraint("channel_id", "wa_chat_id"),
        # The target of messages' (chat_id, channel_id) key (migration 0003).
        UniqueConstraint("id", "channel_id"),
        CheckConstraint(_in("status", ChatStatus), name="status"),
        Index(None, "contact_id"),
        Index("ix_chats_listing", "workspace_id", "channel_id", text("last_message_at DESC"), "id"),
        # The inbox (migration 0008): a workspace's chats in CHAT_RECENCY
        # order, and one agent's.
        Index("ix_chats_inbox", "workspace_id", text(f"{CHAT_RECENCY} DESC"), text("id DESC")),
        Index("ix_chats_assigned", "workspace_id", "assigned_to", text(f"{CHAT_RECENCY} DESC"),
              text("id DESC"), postgresql_where=text("assigned_to IS NOT NULL")),
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
    status: Mapped[str] = mapped_column(Text, nullable=False,
                                        server_default=ChatStatus.ACTIVE.value)
    # The user the chat is assigned to. Users live elsewhere (and may be
    # removed): a plain uuid, no foreign key.
    assigned_to: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
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
        CheckConstraint(_in("status", MessageStatus), name="status"),
        CheckConstraint(_in("direction", Direction), name="direction"),
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
        # GET /v1/messages: a workspace's messages, newest first (migration
        # 0008). Not on status: an indexed status would make every status
        # change a non-HOT update of this, the largest table.
        Index(None, "workspace_id", "created_at", "id"),
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
    # Whapi's actions on this message (migration 0004). Reactions, one per
    # reactor: {"<reactor>": {"emoji": "👍", "at": <unix s>}}; a removed
    # reaction keeps its entry with emoji "" so an older one arriving late
    # can't bring it back.
    reactions: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    # Earlier versions after edits, oldest first: [{"body", "until"}].
    edit_history: Mapped[list[Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'::jsonb"))
    edited_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Deleted for everyone: the row stays, its content is erased.
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutboxMessage(Base):
    """The work queue. Kept small: sent rows are pruned in batches. Its pages
    keep 30% free (fillfactor 70, migration 0014: not in the model, which
    can't say it) so its three updates per message stay HOT."""

    __tablename__ = "outbox_messages"
    __table_args__ = (
        CheckConstraint(_in("status", OutboxStatus), name="status"),
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
        Index("ix_outbox_cancelled", "updated_at",
              postgresql_where=text("status = 'cancelled'")),
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
    status: Mapped[str] = mapped_column(Text, nullable=False,
                                        server_default=OutboxStatus.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="5")
    priority: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=text("now()")
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    claim_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When this claim's request started (NULL: not yet): the rescuer refunds
    # the attempt of a row whose worker died before it (migration 0007).
    send_started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The enqueuing span's W3C trace context, with OpenTelemetry configured
    # (outbox/tracing.py): the send's span links back to it (migration 0012).
    trace_context: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


# --- HTTP service: API keys and early webhook statuses (migration 0002) -------


class ApiKey(Base):
    """A workspace's key for the HTTP API. Only a SHA-256 of the key is kept.

    The key reads `wo_<prefix>_<secret>`: `prefix` (not secret) finds the row,
    then the hashes are compared in constant time.
    """

    __tablename__ = "api_keys"
    __table_args__ = (
        UniqueConstraint("prefix"),
        Index(None, "workspace_id"),
        CheckConstraint(f"scopes <@ ARRAY[{', '.join(repr(s.value) for s in Scope)}]::text[] "
                        "AND cardinality(scopes) > 0", name="scopes"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str | None] = mapped_column(Text)
    prefix: Mapped[str] = mapped_column(Text, nullable=False)
    key_hash: Mapped[str] = mapped_column(Text, nullable=False)  # hex SHA-256 of the whole key
    created_at: Mapped[datetime] = _created()
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the key may do (migration 0009); keys made before could read and send.
    scopes: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default=text("'{read,send}'::text[]"))


# --- Console users and their sessions (migration 0009) -------------------------


class User(Base):
    """A person who signs in to a workspace. Only an Argon2id hash of the
    password is kept; the email is stored lower-cased, unique per workspace."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("workspace_id", "email"),
        CheckConstraint(_in("role", Role), name="role"),
        CheckConstraint("email = lower(email)", name="email_lower"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    email: Mapped[str] = mapped_column(Text, nullable=False)
    role: Mapped[str] = mapped_column(Text, nullable=False)
    password_hash: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created()
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class UserSession(Base):
    """A signed-in user: the token is opaque and random, kept as its SHA-256."""

    __tablename__ = "sessions"
    __table_args__ = (UniqueConstraint("token_hash"), Index(None, "user_id"))

    id: Mapped[uuid.UUID] = _uuid_pk()
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("users.id", ondelete="CASCADE"), nullable=False)
    token_hash: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_seen_at: Mapped[datetime] = _created()
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
    # A `failed` status's reason, from Whapi's `errors` (migration 0004).
    error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = _created()


# --- Whapi traffic (migration 0004) -------------------------------------------


class WebhookPending(Base):
    """Webhook events about a message we don't hold yet, waiting for it.

    Whapi delivers reactions, edits and deletes of a message that may arrive
    after them (reordering, an offline backlog), and echoes of our own sends
    that can arrive before the dispatcher has recorded the WhatsApp id. They
    wait here, keyed by the message's WhatsApp id, until it shows up or
    they expire (an echo that never matches was sent by someone else with
    the channel's token: it is then stored as an outbound message).
    """

    __tablename__ = "webhook_pending"
    __table_args__ = (
        UniqueConstraint("channel_id", "wa_message_id", "kind", "action_key"),
        CheckConstraint(_in("kind", PendingKind), name="kind"),
        Index(None, "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    channel_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("channels.id", ondelete="CASCADE"), nullable=False
    )
    wa_message_id: Mapped[str] = mapped_column(Text, nullable=False)  # the target's id
    kind: Mapped[str] = mapped_column(Text, nullable=False)
    # What makes a replay a replay: the action message's id, or the reactor.
    action_key: Mapped[str] = mapped_column(Text, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    received_at: Mapped[datetime] = _created()


class WebhookDeadLetter(Base):
    """An authenticated webhook body (or entry) we could not use, kept raw.

    Whapi retries anything but a 200 forever, so such bodies are answered
    200 and kept here for a human (`outbox status` counts them). A retried
    body is kept once (its SHA-256).
    """

    __tablename__ = "webhook_dead_letters"
    __table_args__ = (
        UniqueConstraint("channel_id", "body_sha256"),
        Index(None, "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    channel_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("channels.id", ondelete="CASCADE"), nullable=False
    )
    event_type: Mapped[str | None] = mapped_column(Text)
    event_method: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)  # as received
    body_sha256: Mapped[str] = mapped_column(Text, nullable=False)
    received_at: Mapped[datetime] = _created()


# --- Events (migration 0010) ---------------------------------------------------

#: Bits of an event id below its transaction's id: an event's id is
#: `xid << EVENT_ID_SHIFT | ordinal` (outbox.next_event_id(), migration 0010),
#: so ids follow the order transactions started in, and a reader can tell
#: which ids no running transaction can still commit (db/event_queries.py).
EVENT_ID_SHIFT = 20


class Event(Base):
    """Something that happened to a message, chat or channel, written in the
    same transaction as the change (db/event_queries.py says how ids work).

    No foreign keys: an event outlives nothing it names for long (it is
    pruned after OUTBOX_EVENTS_RETENTION), and checking one on every write
    would cost the dispatcher's completion a lookup per row.
    """

    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint(_in("type", EventType), name="type"),
        Index(None, "workspace_id", "id"),
    )

    # outbox.next_event_id(), named by every statement that writes events.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    type: Mapped[str] = mapped_column(Text, nullable=False)
    occurred_at: Mapped[datetime] = _created()
    channel_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    chat_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    message_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    payload: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb"))


class WebhookEndpoint(Base):
    """A URL a workspace's events are posted to, signed (status callbacks)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        CheckConstraint(_in("status", EndpointStatus), name="status"),
        CheckConstraint("cardinality(event_types) > 0", name="event_types"),
        Index(None, "workspace_id"),
    )

    id: Mapped[uuid.UUID] = _uuid_pk()
    workspace_id: Mapped[str] = mapped_column(Text, nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    # The signing secret (whsec_...), encrypted like channel tokens.
    encrypted_secret: Mapped[str] = mapped_column(Text, nullable=False)
    key_id: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False,
                                        server_default=EndpointStatus.ACTIVE.value)
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    # The first failure since the last success: 3 days of it disables.
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Events after this id are delivered (the horizon when it was added).
    after_event_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class WebhookDelivery(Base):
    """One event for one endpoint: claimed, sent, retried like an outbox
    row (SKIP LOCKED, a lease, backoff). The event's JSON is kept here: the
    event may be pruned before the last retry."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        CheckConstraint(_in("status", DeliveryStatus), name="status"),
        UniqueConstraint("endpoint_id", "event_id"),
        Index("ix_webhook_deliveries_due", "endpoint_id", "next_attempt_at",
              postgresql_where=text("status = 'pending'")),
        Index("ix_webhook_deliveries_leased", "locked_until",
              postgresql_where=text("status = 'delivering'")),
        Index(None, "endpoint_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_endpoints.id", ondelete="CASCADE"),
        nullable=False)
    event_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    event_type: Mapped[str] = mapped_column(Text, nullable=False)
    body: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(Text, nullable=False,
                                        server_default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = _created()
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claim_token: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created()
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookFanout(Base):
    """One row: the last event whose deliveries have been created."""

    __tablename__ = "webhook_fanout"
    __table_args__ = (CheckConstraint("id = 1", name="one_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_event_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
