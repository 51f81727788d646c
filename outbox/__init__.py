"""whapi-outbox: WhatsApp messages through Whapi.cloud, sent from a transactional outbox.

The library's whole public surface::

    from outbox import enqueue_text, enqueue_media, enqueue_many, cancel

Each enqueue adds rows to the caller's transaction, a SQLAlchemy `Session` or
`AsyncSession` on any PostgreSQL driver, or a plain DB-API connection (psycopg
3 or psycopg2, e.g. Django's inside `transaction.atomic()`), and never commits.
`cancel` takes back a message the dispatcher has not claimed, in the
caller's transaction. Errors form one hierarchy rooted at `outbox.errors.OutboxError`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

    __version__: str

# The public names are loaded on first use (PEP 562), not when any `outbox.*`
# module is imported: `outbox dispatch --once` must not pay for the enqueue
# path's phone parsing and the admin services on every cron run.
_LAZY = {
    "cancel": "outbox.admin.messages",
    "EnqueueResult": "outbox.enqueue",
    "enqueue_many": "outbox.enqueue",
    "enqueue_media": "outbox.enqueue",
    "enqueue_text": "outbox.enqueue",
    "MediaMessage": "outbox.message_types",
    "TextMessage": "outbox.message_types",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        #: The installed distribution's version (pyproject.toml is the one place it's written).
        value: Any = version("whapi-outbox")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in __all__:  # the errors: outbox.errors imports nothing heavy
        value = getattr(importlib.import_module("outbox.errors"), name)
    else:
        raise AttributeError(f"module 'outbox' has no attribute {name!r}")
    globals()[name] = value
    return value


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
