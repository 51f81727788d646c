"""The states a stored row can be in: one vocabulary for the schema and the code.

The models' CHECK constraints are built from these enums, and the rest of
the package uses them by name (`outbox.states` re-exports them as the
public vocabulary). They live here, in the lower layer, because db/
imports nothing from outbox/ and the schema must not hold a second copy.

`StrEnum`: a member is its value (`OutboxStatus.QUEUED == "queued"`), so it
goes into SQL parameters and JSON as it is.
"""

from __future__ import annotations

import enum


class ChannelStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"  # until `paused_until`, or until resumed (`pause_cause`)
    DISABLED = "disabled"


class ChatStatus(enum.StrEnum):
    ACTIVE = "active"
    ARCHIVED = "archived"


class MessageStatus(enum.StrEnum):
    """A message's delivery status, in both directions: `pending` until the
    provider accepts it, then what WhatsApp reports, forward only."""

    PENDING = "pending"  # queued, not yet accepted by the provider
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    PLAYED = "played"  # a voice message listened to
    FAILED = "failed"
    DELETED = "deleted"
    CANCELLED = "cancelled"  # taken back before a dispatcher claimed it, or a dead letter


class OutboxStatus(enum.StrEnum):
    """The message's row in the send queue: `queued` (waiting, or retrying
    later), `sending`, `sent`, or `failed` (a dead letter, until retried)."""

    QUEUED = "queued"
    SENDING = "sending"  # claimed: a dispatcher holds its lease
    SENT = "sent"
    FAILED = "failed"  # a dead letter: `outbox retry` queues it again
    CANCELLED = "cancelled"  # taken back before a dispatcher claimed it, or a dead letter


class Direction(enum.StrEnum):
    """`outbound`: sent from the channel (the API, or typed on its phone);
    `inbound`: written to it."""

    OUTBOUND = "outbound"
    INBOUND = "inbound"


class PauseCause(enum.StrEnum):
    """Why a channel is paused. `unauthorized` (HTTP 401) and `session`
    (Whapi's health/users webhooks: logged out, QR, ERROR) end when the
    session is back; the others need time or a human."""

    RATE_LIMIT = "rate_limit"
    CIRCUIT = "circuit"
    UNAUTHORIZED = "unauthorized"
    TRIAL_LIMIT = "trial_limit"
    NOT_FOUND = "not_found"
    SESSION = "session"
    MANUAL = "manual"
    CREDENTIALS = "credentials"


class Scope(enum.StrEnum):
    """What an API key or a user may do (outbox/admin/access.py)."""

    READ = "read"
    SEND = "send"
    CHATS = "chats"
    ADMIN = "admin"


class Role(enum.StrEnum):
    """A user's role: the scopes it grants (outbox/admin/access.py)."""

    VIEWER = "viewer"
    AGENT = "agent"
    ADMIN = "admin"


class PendingKind(enum.StrEnum):
    """What waits in webhook_pending for a message that isn't stored yet."""

    REACTION = "reaction"
    EDIT = "edit"
    DELETE = "delete"
    ECHO = "echo"


class EventType(enum.StrEnum):
    """What an event (outbox.events) says happened: `<subject>.<what>`, the
    vocabulary of the stream, the polling endpoint and status callbacks."""

    MESSAGE_QUEUED = "message.queued"  # enqueued (or a dead letter queued again)
    MESSAGE_SENT = "message.sent"  # the provider accepted it (or it was typed on the phone)
    MESSAGE_DELIVERED = "message.delivered"
    MESSAGE_READ = "message.read"
    MESSAGE_PLAYED = "message.played"
    MESSAGE_FAILED = "message.failed"  # dead-lettered, or failed after it was sent
    MESSAGE_CANCELLED = "message.cancelled"
    MESSAGE_RECEIVED = "message.received"  # someone wrote to the channel
    MESSAGE_REACTION = "message.reaction"
    MESSAGE_EDITED = "message.edited"
    MESSAGE_DELETED = "message.deleted"
    CHAT_READ = "chat.read"
    CHAT_ARCHIVED = "chat.archived"
    CHAT_REOPENED = "chat.reopened"
    CHAT_ASSIGNED = "chat.assigned"
    CHANNEL_PAUSED = "channel.paused"
    CHANNEL_RESUMED = "channel.resumed"
    CHANNEL_DISABLED = "channel.disabled"


class EndpointStatus(enum.StrEnum):
    """A status-callback endpoint (webhook_endpoints): `disabled` after 3
    days of failures or a 410 from the receiver, with its reason."""

    ACTIVE = "active"
    DISABLED = "disabled"


class DeliveryStatus(enum.StrEnum):
    """One event's delivery to one endpoint (webhook_deliveries)."""

    PENDING = "pending"  # waiting for its (next) attempt
    DELIVERING = "delivering"  # claimed: a sender holds its lease
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # a dead letter: retried for 3 days, or the receiver said 410
