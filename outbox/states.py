"""The states of channels, chats, messages and queue rows: one vocabulary.

Models (their CHECK constraints), SQL parameters, dispatch outcomes,
webhooks and the API's schemas (OpenAPI shows them as `enum`s) all use
these. They are defined in `outbox.db.states`, the lower layer, because
db/ imports nothing from the rest of the package; this is their public
name.
"""

from __future__ import annotations

from outbox.db.states import (
    ChannelStatus,
    ChatStatus,
    DeliveryStatus,
    Direction,
    EndpointStatus,
    EventType,
    MessageStatus,
    OutboxStatus,
    PauseCause,
    PendingKind,
    Role,
    Scope,
)

__all__ = [
    "ChannelStatus",
    "ChatStatus",
    "DeliveryStatus",
    "Direction",
    "EndpointStatus",
    "EventType",
    "MessageStatus",
    "OutboxStatus",
    "PauseCause",
    "PendingKind",
    "Role",
    "Scope",
]
