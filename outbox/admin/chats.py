"""Chats (conversations): list them newest first, archive, mark read.

Shared by the CLI (`outbox chats ...`) and the HTTP API (`GET /v1/chats`).
Lists are keyset-paginated on (last_message_at, id): a page is one index
range scan however deep the caller pages, and rows that move meanwhile are
neither skipped twice nor repeated within one snapshot.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from outbox.db import admin_queries as q
from outbox.errors import ChatNotFound, InvalidInput
from outbox.message_types import parse_channel_id
from outbox.states import ChatStatus

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class ChatInfo:
    id: uuid.UUID
    channel_id: uuid.UUID
    wa_chat_id: str
    phone: str
    name: str | None
    last_message_at: datetime | None
    last_message_preview: str | None
    unread_count: int
    status: str
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id), "channel_id": str(self.channel_id),
            "wa_chat_id": self.wa_chat_id, "phone": self.phone, "name": self.name,
            "last_message_at": self.last_message_at.isoformat() if self.last_message_at else None,
            "last_message_preview": self.last_message_preview,
            "unread_count": self.unread_count, "status": self.status,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class ChatPage:
    chats: list[ChatInfo]
    next_cursor: str | None  # pass back as `cursor` for the next page; None: last page


def list_chats(
    session: Session,
    *,
    workspace_id: str | None = None,
    channel_id: uuid.UUID | str | None = None,
    unread_only: bool = False,
    archived: bool = False,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> ChatPage:
    """Active chats (or, with `archived`, archived ones), newest message first."""
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be from 1 to {MAX_PAGE_SIZE}", field="limit")
    cid = parse_channel_id(channel_id) if channel_id is not None else None
    after = decode_cursor(cursor) if cursor else None
    rows = session.execute(text(q.LIST_CHATS), {
        "workspace_id": workspace_id, "channel_id": cid,
        "status": ChatStatus.ARCHIVED if archived else ChatStatus.ACTIVE,
        "unread_only": unread_only,
        "has_cursor": after is not None,
        "cursor_at": after[0] if after else None, "cursor_id": after[1] if after else None,
        "limit": limit + 1,
    }).all()
    chats = [ChatInfo(r.id, r.channel_id, r.wa_chat_id, r.phone, r.name, r.last_message_at,
                      r.last_message_preview, r.unread_count, r.status, r.created_at)
             for r in rows[:limit]]
    more = len(rows) > limit
    next_cursor = encode_cursor(chats[-1].last_message_at, chats[-1].id) if more else None
    return ChatPage(chats, next_cursor)


def archive_chat(session: Session, chat_id: uuid.UUID | str, *,
                 workspace_id: str | None = None) -> str:
    return _set_status(session, chat_id, ChatStatus.ARCHIVED, workspace_id)


def unarchive_chat(session: Session, chat_id: uuid.UUID | str, *,
                   workspace_id: str | None = None) -> str:
    return _set_status(session, chat_id, ChatStatus.ACTIVE, workspace_id)


def mark_chat_read(session: Session, chat_id: uuid.UUID | str, *,
                   workspace_id: str | None = None) -> int:
    """Unread count to 0; the chat's inbound messages become `read`. Returns
    how many messages changed."""
    row = session.execute(text(q.MARK_CHAT_READ), {
        "chat_id": _chat_id(chat_id), "workspace_id": workspace_id}).one()
    if row.chat_id is None:
        raise ChatNotFound(f"chat {chat_id} does not exist", field="chat_id")
    return int(row.messages_read)


def encode_cursor(last_message_at: datetime | None, chat_id: uuid.UUID) -> str:
    raw = f"{last_message_at.isoformat() if last_message_at else ''}|{chat_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime | None, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, cid = raw.partition("|")
        when = datetime.fromisoformat(at) if at else None
        if when is not None and when.tzinfo is None:
            raise ValueError("naive")
        return when, uuid.UUID(cid)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("cursor is not one this API returned", field="cursor") from None


def _set_status(session: Session, chat_id: uuid.UUID | str, status: ChatStatus,
                workspace_id: str | None) -> str:
    row = session.execute(text(q.SET_CHAT_STATUS), {
        "chat_id": _chat_id(chat_id), "status": status, "workspace_id": workspace_id,
    }).one_or_none()
    if row is None:
        raise ChatNotFound(f"chat {chat_id} does not exist", field="chat_id")
    return str(row.status)


def _chat_id(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        raise ChatNotFound(f"chat {str(value)[:40]!r} does not exist", field="chat_id") from None
