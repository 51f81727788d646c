"""whapi-outbox: WhatsApp messages through Whapi.cloud, sent from a transactional outbox.

The library's whole public surface::

    from outbox import enqueue_text, enqueue_media, enqueue_many

Each adds rows to the caller's transaction, a SQLAlchemy `Session` or
`AsyncSession` on any PostgreSQL driver, or a plain DB-API connection (psycopg
3 or psycopg2, e.g. Django's inside `transaction.atomic()`), and never commits.
Errors form one hierarchy rooted at `outbox.errors.OutboxError`.
"""

from importlib.metadata import version as _version

from outbox.enqueue import EnqueueResult, enqueue_many, enqueue_media, enqueue_text
from outbox.errors import (
    ChannelDisabled,
    ChannelNotFound,
    ConfigurationError,
    CryptoError,
    InvalidInput,
    InvalidMessage,
    InvalidPhone,
    InvalidSchedule,
    NotAConversation,
    NotFound,
    OutboxError,
)
from outbox.message_types import MediaMessage, TextMessage

#: The installed distribution's version (pyproject.toml is the one place it's written).
__version__ = _version("whapi-outbox")

__all__ = [
    "ChannelDisabled",
    "ChannelNotFound",
    "ConfigurationError",
    "CryptoError",
    "EnqueueResult",
    "InvalidInput",
    "InvalidMessage",
    "InvalidPhone",
    "InvalidSchedule",
    "MediaMessage",
    "NotAConversation",
    "NotFound",
    "OutboxError",
    "TextMessage",
    "enqueue_many",
    "enqueue_media",
    "enqueue_text",
]
