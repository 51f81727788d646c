"""The enqueue API: add messages to the caller's transaction.

Nothing here commits. The caller's `Session` (or `AsyncSession`, or plain
DB-API connection) owns the transaction: commit and the messages are queued
(and the dispatcher is woken by a NOTIFY); roll back and there is no trace.
The sync and async entry points run the same code: with an `AsyncSession`
the work runs through `AsyncSession.run_sync`, SQLAlchemy's bridge, so there
is one implementation. Whatever the driver (psycopg 3, psycopg2, asyncpg,
...), the statements are the same; db/enqueue_drivers.py runs them.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol, overload

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

# ENQUEUE_SQL and batch_plan_settings: re-exported for the plan tests.
from outbox import tracing
from outbox.db.enqueue_drivers import ENQUEUE_SQL as ENQUEUE_SQL
from outbox.db.enqueue_drivers import AutocommitConnection, EnqueueRunner, runner_for
from outbox.db.enqueue_drivers import batch_plan_settings as batch_plan_settings
from outbox.errors import (
    ChannelDisabled,
    ChannelNotFound,
    ConfigurationError,
    IdempotencyConflict,
    InvalidInput,
)
from outbox.ids import uuid7s
from outbox.jsonio import dumps_unicode
from outbox.message_types import (
    MediaMessage,
    NewMessage,
    PreparedMessage,
    TextMessage,
    check_workspace_id,
    prepare,
)
from outbox.settings import get_settings
from outbox.states import ChannelStatus

DEFAULT_MAX_ATTEMPTS = 5
# Rows that lost a race (a concurrent enqueue committed a contact, chat or
# idempotency key after our statement's snapshot) are re-run this many times.
_MAX_RACE_RETRIES = 3

# Up to this many rows, a prepared (generic) plan is as good as a custom one.
_PREPARED_BATCH_MAX = 10
# What ENQUEUE returned for one message: (message_id, outbox_id, chat_id, duplicate).
_Hit = tuple[uuid.UUID, int | None, uuid.UUID, bool]


class DBAPIConnection(Protocol):
    """A plain DB-API connection in a transaction: psycopg 3's `Connection`
    or psycopg2's (with Django, `django.db.connection.connection` inside
    `transaction.atomic()`). Enqueue runs its statements on a cursor of its
    own and never commits, rolls back or closes the connection."""

    def cursor(self, *args: Any, **kwargs: Any) -> Any: ...
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    message_id: uuid.UUID
    outbox_id: int | None  # None only for an old duplicate whose outbox row was pruned
    chat_id: uuid.UUID
    contact_created: bool
    chat_created: bool
    duplicate: bool  # the idempotency key was already used: nothing new was written


@dataclass(frozen=True, slots=True)
class EnqueueOptions:
    workspace_id: str | None = None
    default_region: str | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS


# --- public API ------------------------------------------------------------


@overload
def enqueue_text(
    session: Session | DBAPIConnection,
    *,
    channel_id: uuid.UUID | str,
    to: str,
    body: str,
    idempotency_key: str | None = ...,
    priority: int = ...,
    send_at: datetime | None = ...,
    workspace_id: str | None = ...,
    default_region: str | None = ...,
    max_attempts: int = ...,
) -> EnqueueResult: ...
@overload
def enqueue_text(
    session: AsyncSession,
    *,
    channel_id: uuid.UUID | str,
    to: str,
    body: str,
    idempotency_key: str | None = ...,
    priority: int = ...,
    send_at: datetime | None = ...,
    workspace_id: str | None = ...,
    default_region: str | None = ...,
    max_attempts: int = ...,
) -> Awaitable[EnqueueResult]: ...
def enqueue_text(
    session: Session | AsyncSession | DBAPIConnection,
    *,
    channel_id: uuid.UUID | str,
    to: str,
    body: str,
    idempotency_key: str | None = None,
    priority: int = 0,
    send_at: datetime | None = None,
    workspace_id: str | None = None,
    default_region: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> EnqueueResult | Awaitable[EnqueueResult]:
    """Queue a text message in the caller's transaction; never commits.

    With an `AsyncSession`, await the result. `session` may also be a
    DB-API connection in a transaction (psycopg 3 or psycopg2; see
    `DBAPIConnection`). Raises an `InvalidInput`
    (bad phone, empty or over-long text, naive `send_at`), `ChannelNotFound`
    or `ChannelDisabled`; on error nothing is written.
    """
    message = TextMessage(channel_id, to, body, idempotency_key, priority, send_at)
    options = EnqueueOptions(workspace_id, default_region, max_attempts)
    return _dispatch_one(session, message, options)


@overload
def enqueue_media(
    session: Session | DBAPIConnection,
    *,
    channel_id: uuid.UUID | str,
    to: str,
    media_type: str,
    media: str,
    caption: str | None = ...,
    filename: str | None = ...,
    mime_type: str | None = ...,
    idempotency_key: str | None = ...,
    priority: int = ...,
    send_at: datetime | None = ...,
    workspace_id: str | None = ...,
    default_region: str | None = ...,
    max_attempts: int = ...,
) -> EnqueueResult: ...
@overload
def enqueue_media(
    session: AsyncSession,
    *,
    channel_id: uuid.UUID | str,
    to: str,
    media_type: str,
    media: str,
    caption: str | None = ...,
    filename: str | None = ...,
    mime_type: str | None = ...,
    idempotency_key: str | None = ...,
    priority: int = ...,
    send_at: datetime | None = ...,
    workspace_id: str | None = ...,
    default_region: str | None = ...,
    max_attempts: int = ...,
) -> Awaitable[EnqueueResult]: ...
def enqueue_media(
    session: Session | AsyncSession | DBAPIConnection,
    *,
    channel_id: uuid.UUID | str,
    to: str,
    media_type: str,
    media: str,
    caption: str | None = None,
    filename: str | None = None,
    mime_type: str | None = None,
    idempotency_key: str | None = None,
    priority: int = 0,
    send_at: datetime | None = None,
    workspace_id: str | None = None,
    default_region: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> EnqueueResult | Awaitable[EnqueueResult]:
    """Queue an image, video, document or audio message (by URL) in the
    caller's transaction; never commits. Same rules as `enqueue_text`."""
    message = MediaMessage(
        channel_id, to, media_type, media, caption, filename, mime_type,
        idempotency_key, priority, send_at,
    )
    options = EnqueueOptions(workspace_id, default_region, max_attempts)
    return _dispatch_one(session, message, options)


@overload
def enqueue_many(
    session: Session | DBAPIConnection,
    messages: Sequence[NewMessage],
    *,
    workspace_id: str | None = ...,
    default_region: str | None = ...,
    max_attempts: int = ...,
) -> list[EnqueueResult]: ...
@overload
def enqueue_many(
    session: AsyncSession,
    messages: Sequence[NewMessage],
    *,
    workspace_id: str | None = ...,
    default_region: str | None = ...,
    max_attempts: int = ...,
) -> Awaitable[list[EnqueueResult]]: ...
def enqueue_many(
    session: Session | AsyncSession | DBAPIConnection,
    messages: Sequence[NewMessage],
    *,
    workspace_id: str | None = None,
    default_region: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> list[EnqueueResult] | Awaitable[list[EnqueueResult]]:
    """Queue many messages (any channels) in one round trip; never commits.

    All or nothing: one invalid message, unknown or disabled channel raises
    and writes nothing. Results are in the order given.
    """
    options = EnqueueOptions(workspace_id, default_region, max_attempts)
    ahead = get_settings().max_schedule_ahead
    prepared = [prepare(m, default_region=default_region, max_schedule_ahead=ahead)
                for m in messages]
    if isinstance(session, AsyncSession):
        return session.run_sync(lambda s: enqueue_prepared(s, prepared, options))
    return enqueue_prepared(session, prepared, options)


# --- implementation ----------------------------------------------------------


def _dispatch_one(
    session: Session | AsyncSession | DBAPIConnection, message: NewMessage,
    options: EnqueueOptions,
) -> EnqueueResult | Awaitable[EnqueueResult]:
    # Validate before touching the session, so bad input raises synchronously
    # (also for async callers) and writes nothing.
    prepared = [prepare(message, default_region=options.default_region,
                        max_schedule_ahead=get_settings().max_schedule_ahead)]
    if isinstance(session, AsyncSession):
        return _run_async_one(session, prepared, options)
    return enqueue_prepared(session, prepared, options)[0]


async def _run_async_one(
    session: AsyncSession, prepared: list[PreparedMessage], options: EnqueueOptions
) -> EnqueueResult:
    results = await session.run_sync(lambda s: enqueue_prepared(s, prepared, options))
    return results[0]


def enqueue_prepared(
    session: Session | DBAPIConnection,
    prepared: Sequence[PreparedMessage],
    options: EnqueueOptions,
) -> list[EnqueueResult]:
    """Write validated messages with the ENQUEUE statement (see db/queries.py)."""
    if not prepared:
        return []
    if not tracing.active():
        return _enqueue_prepared(session, prepared, options)
    with tracing.span("outbox.enqueue", kind="producer",
                      attributes={"outbox.messages": len(prepared)}) as span:
        results = _enqueue_prepared(session, prepared, options)
        span.set_attribute("outbox.duplicates", sum(r.duplicate for r in results))
        return results


def _enqueue_prepared(
    session: Session | DBAPIConnection,
    prepared: Sequence[PreparedMessage],
    options: EnqueueOptions,
) -> list[EnqueueResult]:
    if not 1 <= options.max_attempts <= 100:
        raise InvalidInput("max_attempts must be from 1 to 100", field="max_attempts")
    if options.workspace_id is not None:
        options = replace(options, workspace_id=check_workspace_id(options.workspace_id))
    # Our tables' schema (OUTBOX_DB_SCHEMA, read once): statements name it,
    # so the caller's search_path doesn't matter and isn't changed.
    try:
        runner = runner_for(session, get_settings().db_schema)
    except AutocommitConnection as exc:
        raise ConfigurationError(str(exc)) from None
    # The same idempotency key twice in one batch means one message.
    first_by_key: dict[tuple[uuid.UUID, str], int] = {}
    aliases: dict[int, int] = {}
    unique: list[tuple[int, PreparedMessage]] = []
    for ord_, p in enumerate(prepared):
        if p.idempotency_key is not None:
            k = (p.channel_id, p.idempotency_key)
            if k in first_by_key:
                aliases[ord_] = first_by_key[k]
                continue
            first_by_key[k] = ord_
        unique.append((ord_, p))

    results: dict[int, EnqueueResult] = {}
    pending = unique
    for _ in range(_MAX_RACE_RETRIES + 1):
        message_ids = uuid7s(len(pending))
        rows = _execute(runner, pending, message_ids, options)
        if not rows:
            _raise_for_channels(runner, {p.channel_id for _, p in pending}, options)
            # Channels are fine: every row lost a race; run them again.
        # ENQUEUE's rows: (kind, message_id, outbox_id, chat_id, ord, phone,
        # workspace_id), as plain tuples (see db/enqueue_drivers.py).
        written: dict[uuid.UUID, _Hit] = {}  # new rows, by the id we generated
        existing: dict[int, _Hit] = {}  # idempotency-key duplicates, by batch position
        new_chats: set[uuid.UUID] = set()
        new_contacts: set[str] = set()  # by phone: a batch's channels share a workspace
        for kind, message_id, outbox_id, chat_id, ord_, phone, _ in rows:
            if kind == "outbox":
                written[message_id] = (message_id, outbox_id, chat_id, False)
            elif kind == "existing":
                existing[ord_] = (message_id, outbox_id, chat_id, True)
            elif kind == "chat":
                new_chats.add(chat_id)
            elif kind == "contact":
                new_contacts.add(phone)
        lost = []
        for (ord_, p), message_id in zip(pending, message_ids, strict=True):
            hit = written.get(message_id) or existing.get(ord_)
            if hit is None:
                lost.append((ord_, p))
                continue
            result_id, outbox_id, chat_id, duplicate = hit
            results[ord_] = EnqueueResult(
                message_id=result_id,
                outbox_id=outbox_id,
                chat_id=chat_id,
                contact_created=p.recipient.phone in new_contacts,
                chat_created=chat_id in new_chats,
                duplicate=duplicate,
            )
        if not lost:
            break
        pending = lost
    else:
        raise IdempotencyConflict(
            "a concurrent transaction holds the same idempotency key, contact or chat and is "
            "not visible to this one (REPEATABLE READ or SERIALIZABLE): retry the transaction"
        )
    for alias, original in aliases.items():
        results[alias] = replace(results[original], duplicate=True)
    return [results[i] for i in range(len(prepared))]


def _execute(
    runner: EnqueueRunner,
    batch: Sequence[tuple[int, PreparedMessage]],
    message_ids: Sequence[uuid.UUID],
    options: EnqueueOptions,
) -> list[tuple[Any, ...]]:
    params = enqueue_params(batch, message_ids, options)
    return runner.enqueue(params, batch=len(batch) > _PREPARED_BATCH_MAX)


def enqueue_params(
    batch: Sequence[tuple[int, PreparedMessage]],
    message_ids: Sequence[uuid.UUID],
    options: EnqueueOptions,
) -> dict[str, Any]:
    """ENQUEUE's parameters: one array per column, in batch order."""
    channel_ids = sorted({p.channel_id for _, p in batch})
    return {
        "channel_ids": channel_ids,
        "workspace_id": options.workspace_id,
        "channel_count": len(channel_ids),
        "max_attempts": options.max_attempts,
        "ords": [o for o, _ in batch],
        "message_ids": list(message_ids),
        "row_channel_ids": [p.channel_id for _, p in batch],
        "phones": [p.recipient.phone for _, p in batch],
        "wa_chat_ids": [p.recipient.wa_chat_id for _, p in batch],
        "is_groups": [p.recipient.is_group for _, p in batch],
        "types": [p.message_type for _, p in batch],
        "bodies": [p.body for _, p in batch],
        "payloads": [dumps_unicode(p.payload) for _, p in batch],
        "keys": [p.idempotency_key for _, p in batch],
        "priorities": [p.priority for _, p in batch],
        "send_ats": [p.send_at for _, p in batch],
        # The enqueue span's context, for the send to link back to (or None).
        "trace_context": tracing.current_trace_context(),
    }


def _raise_for_channels(
    runner: EnqueueRunner, channel_ids: set[uuid.UUID], options: EnqueueOptions
) -> None:
    found = runner.channel_statuses(
        {"channel_ids": sorted(channel_ids), "workspace_id": options.workspace_id})
    for channel_id in sorted(channel_ids):
        status = found.get(channel_id)
        if status is None:
            raise ChannelNotFound(f"channel {channel_id} does not exist", field="channel_id")
        if status == ChannelStatus.DISABLED:
            raise ChannelDisabled(
                f"channel {channel_id} is disabled: resume it or use another channel",
                field="channel_id",
            )
