"""Messages: list them (the dead-letter view too), read one with its
content, cancel one before it is sent (or a dead letter), send a failed one
again.

Shared by the library (`outbox.cancel`), the CLI (`outbox cancel`) and the
HTTP API (`/v1/messages`); the SQL is db/inbox_queries.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from outbox.admin.pages import DEFAULT_PAGE_SIZE, check_limit, cursor_params, encode_cursor
from outbox.admin.status import retry_failed
from outbox.db import inbox_queries as sql
from outbox.db.states import Direction, MessageStatus, OutboxStatus
from outbox.errors import (
    AlreadyFailed,
    AlreadySending,
    AlreadySent,
    FailedAfterSending,
    InvalidInput,
    MessageNotFound,
    NotCancellable,
    NotFailed,
)
from outbox.message_types import MAX_IDEMPOTENCY_KEY_LENGTH, parse_channel_id

#: Message statuses that mean WhatsApp has it.
SENT_STATUSES = frozenset({MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ,
                           MessageStatus.PLAYED, MessageStatus.DELETED})


@dataclass(frozen=True, slots=True)
class MessagePage:
    messages: list[dict[str, Any]]
    next_cursor: str | None


def list_messages(session: Session, *, workspace_id: str, status: str | None = None,
                  chat_id: uuid.UUID | str | None = None,
                  channel_id: uuid.UUID | str | None = None, since: datetime | None = None,
                  idempotency_key: str | None = None,
                  limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> MessagePage:
    """The workspace's messages, newest first; `status="failed"` lists the
    dead letters; `idempotency_key` finds the message(s) queued with it
    (one per channel at most)."""
    check_limit(limit)
    if status is not None and status not in set(MessageStatus):
        raise InvalidInput(f"status must be one of {', '.join(MessageStatus)}",
                           field="status")
    if idempotency_key is not None and ("\x00" in idempotency_key
                                        or len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH):
        raise InvalidInput("idempotency_key is not a key messages are queued with",
                           field="idempotency_key")
    if since is not None and since.tzinfo is None:
        raise InvalidInput("since has no timezone (e.g. 2026-01-31T09:00:00+00:00)",
                           field="since")
    rows = session.execute(text(sql.LIST_MESSAGES), {
        "workspace_id": workspace_id, "status": status,
        "chat_id": _uuid(chat_id, "chat_id") if chat_id is not None else None,
        "channel_id": parse_channel_id(channel_id) if channel_id is not None else None,
        "since": since, "idempotency_key": idempotency_key,
        **cursor_params(cursor), "limit": limit + 1}).all()
    page = [_summary(r) for r in rows[:limit]]
    last = rows[limit - 1] if len(rows) > limit else None
    return MessagePage(page, encode_cursor(last.created_at, last.id) if last else None)


def message_detail(session: Session, message_id: uuid.UUID | str, *,
                   workspace_id: str) -> Row[Any]:
    """The message's row of db/inbox_queries.py's MESSAGE_DETAIL."""
    mid = _message_id(message_id)
    r = session.execute(text(sql.MESSAGE_DETAIL),
                        {"message_id": mid, "workspace_id": workspace_id}).one_or_none()
    if r is None:
        raise MessageNotFound(f"message {mid} does not exist", field="message_id")
    return r


def cancel(session: Session, message_id: uuid.UUID | str, *,
           workspace_id: str | None = None) -> None:
    """Cancel a message the dispatcher has not claimed, or a dead letter:
    it will never be sent, and it reads `cancelled`. Cancelling a cancelled
    message is a no-op. Raises `AlreadySending` (claimed, on its way),
    `AlreadySent`, `AlreadyFailed` (failed after WhatsApp took it), or
    `NotCancellable` (an inbound message), or `MessageNotFound`. In the
    caller's transaction; never commits."""
    mid = _message_id(message_id)
    params = {"message_id": mid, "workspace_id": workspace_id}
    if session.execute(text(sql.CANCEL_MESSAGE), params).first() is not None:
        return
    state = session.execute(text(sql.MESSAGE_STATE), params).one_or_none()
    if state is None:
        raise MessageNotFound(f"message {mid} does not exist", field="message_id")
    if state.status == MessageStatus.CANCELLED:
        return
    if state.direction != Direction.OUTBOUND:
        raise NotCancellable(f"message {mid} is inbound: there is nothing to cancel",
                             field="message_id")
    if state.outbox_status == OutboxStatus.SENDING:
        raise AlreadySending(f"message {mid} is being sent: too late to cancel",
                             field="message_id")
    if state.status == MessageStatus.FAILED:
        raise AlreadyFailed(f"message {mid} failed after WhatsApp took it: nothing to cancel",
                            field="message_id")
    raise AlreadySent(f"message {mid} was sent ({state.status}): too late to cancel",
                      field="message_id")


def retry(session: Session, message_id: uuid.UUID | str, *, workspace_id: str) -> None:
    """A failed message back to the queue with fresh attempts; `NotFailed`
    otherwise (`FailedAfterSending` when it failed after WhatsApp took it)."""
    mid = _message_id(message_id)
    if retry_failed(session, message_id=mid, workspace_id=workspace_id):
        return
    state = session.execute(text(sql.MESSAGE_STATE),
                            {"message_id": mid, "workspace_id": workspace_id}).one_or_none()
    if state is None:
        raise MessageNotFound(f"message {mid} does not exist", field="message_id")
    if state.status == MessageStatus.FAILED and state.outbox_status == OutboxStatus.SENT:
        raise FailedAfterSending(
            f"message {mid} failed after WhatsApp took it: a retry could deliver it twice; "
            "send it again as a new message", field="message_id")
    raise NotFailed(f"message {mid} is {state.status}, not failed: nothing to retry",
                    field="message_id")


def _summary(r: Row[Any]) -> dict[str, Any]:
    return {
        "message_id": str(r.id), "channel_id": str(r.channel_id), "chat_id": str(r.chat_id),
        "to": r.wa_chat_id, "direction": r.direction, "type": r.type, "status": r.status,
        "body": r.body, "wa_message_id": r.wa_message_id, "error": r.error,
        "outbox_status": r.outbox_status, "attempts": r.attempts, "last_error": r.last_error,
        "created_at": r.created_at.isoformat(), "updated_at": r.updated_at.isoformat(),
        "sent_at": r.sent_at.isoformat() if r.sent_at else None,
    }


def _message_id(value: uuid.UUID | str) -> uuid.UUID:
    return _uuid(value, "message_id")


def _uuid(value: uuid.UUID | str, field: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        if field == "message_id":
            raise MessageNotFound(f"message {str(value)[:40]!r} does not exist",
                                  field=field) from None
        raise InvalidInput(f"{field} {str(value)[:40]!r} is not a valid id", field=field) \
            from None
