"""whapi-outbox: WhatsApp messages through Whapi.cloud, sent from a transactional outbox.

The library's whole public surface::

    from outbox import enqueue_text, enqueue_media, enqueue_many, cancel

Each enqueue adds rows to the caller's transaction, a SQLAlchemy `Session` or
`AsyncSession` on any PostgreSQL driver, or a plain DB-API connection (psycopg
3 or psycopg2, e.g. Django's inside `transaction.atomic()`), and never commits.
`cancel` takes back a message the dispatcher has not claimed, in the
caller's transaction. Errors form one hierarchy rooted at `outbox.errors.OutboxError`.
"""

from importlib.metadata import version as _version

from outbox.admin.messages import cancel
from outbox.enqueue import EnqueueResult, enqueue_many, enqueue_media, enqueue_text
from outbox.errors import (
    AlreadyFailed,
    AlreadySending,
    AlreadySent,
    ChannelDisabled,
    ChannelNotFound,
    ConfigurationError,
    CryptoError,
    InvalidInput,
    InvalidMessage,
    InvalidPhone,
    InvalidSchedule,
    NotAConversation,
    NotCancellable,
    NotFound,
    OutboxError,
)
from outbox.message_types import MediaMessage, TextMessage

#: The installed distribution's version (pyproject.toml is the one place it's written).
__version__ = _version("whapi-outbox")

__all__ = [
    "AlreadyFailed",
    "AlreadySending",
    "AlreadySent",
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
    "NotCancellable",
    "NotFound",
    "OutboxError",
    "TextMessage",
    "cancel",
    "enqueue_many",
    "enqueue_media",
    "enqueue_text",
]
