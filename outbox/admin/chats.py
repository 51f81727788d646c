"""Chats (conversations): the inbox's list, one chat, its thread; assign,
archive, mark read.

Shared by the CLI (`outbox chats ...`) and the HTTP API (`/v1/chats`).
Lists are keyset-paginated (outbox/admin/pages.py): chats newest message
first, a thread newest message first with cursors both ways. The SQL is
db/inbox_queries.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from outbox.admin.contacts import ContactInfo
from outbox.admin.pages import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    check_limit,
    cursor_params,
    decode_cursor,
    encode_cursor,
    search,
)
from outbox.db import inbox_queries as sql
from outbox.enqueue import DEFAULT_MAX_ATTEMPTS
from outbox.errors import ChatNotFound, InvalidInput
from outbox.message_types import parse_channel_id
from outbox.states import ChatStatus

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "ChatDetail",
    "ChatInfo",
    "ChatNotFound",
    "ChatPage",
    "ThreadPage",
    "archive_chat",
    "assign_chat",
    "chat_address",
    "decode_cursor",
    "encode_cursor",
    "get_chat",
    "list_chats",
    "mark_chat_read",
    "thread",
    "unarchive_chat",
]


#: A search matching fewer contacts reads their chats directly; more, and
#: it walks the list (dense matches fill a page soon).
FEW_MATCHES = 1_000
#: Chats a broad search walks per call at most: a page's cost stays bounded
#: wherever the matches sit, and a short page carries the cursor onwards.
SEARCH_WALK = 2_000


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
    contact_id: uuid.UUID | None = None
    is_group: bool = False
    assigned_to: uuid.UUID | None = None

    @classmethod
    def from_row(cls, r: Row[Any]) -> ChatInfo:
        return cls(r.id, r.channel_id, r.wa_chat_id, r.phone, r.name, r.last_message_at,
                   r.last_message_preview, r.unread_count, r.status, r.created_at,
                   r.contact_id, r.is_group, r.assigned_to)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": str(self.id), "channel_id": str(self.channel_id),
            "wa_chat_id": self.wa_chat_id, "contact_id": _str(self.contact_id),
            "phone": self.phone, "name": self.name, "is_group": self.is_group,
            "last_message_at": _iso(self.last_message_at),
            "last_message_preview": self.last_message_preview,
            "unread_count": self.unread_count, "status": self.status,
            "assigned_to": _str(self.assigned_to), "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class ChatPage:
    chats: list[ChatInfo]
    next_cursor: str | None  # pass back as `cursor` for the next page; None: last page


@dataclass(frozen=True, slots=True)
class ChatDetail:
    chat: ChatInfo
    contact: ContactInfo
    last_message: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ThreadPage:
    messages: list[dict[str, Any]]  # newest first
    before_cursor: str | None  # older messages: pass as `before`; None: none older
    after_cursor: str | None  # the newest shown: pass as `after` for what came since


def list_chats(
    session: Session,
    *,
    workspace_id: str | None = None,
    channel_id: uuid.UUID | str | None = None,
    unread_only: bool = False,
    archived: bool = False,
    include_archived: bool = False,
    is_group: bool | None = None,
    assigned_to: uuid.UUID | None = None,
    unassigned: bool = False,
    q: str | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> ChatPage:
    """Active chats (with `archived`, archived ones; with `include_archived`,
    both), newest message first. `q`: the start of the contact's name or
    number; `assigned_to` a user, or `unassigned`.

    A search that matches many contacts may return a page shorter than
    `limit`, even empty, with a `next_cursor`: follow it until it is None."""
    check_limit(limit)
    cid = parse_channel_id(channel_id) if channel_id is not None else None
    found = search(q)
    statement = sql.LIST_CHATS
    if found.searching:
        few = session.execute(text(sql.COUNT_MATCHES), {
            "workspace_id": workspace_id, **found.params(), "cap": FEW_MATCHES,
        }).scalar_one() < FEW_MATCHES
        statement = sql.SEARCH_CHATS if few else sql.WALK_CHATS
    rows = session.execute(text(statement), {
        "workspace_id": workspace_id, "channel_id": cid,
        "status": ChatStatus.ARCHIVED if archived else ChatStatus.ACTIVE,
        "include_archived": include_archived,
        "unread_only": unread_only, "is_group": is_group, "assigned_to": assigned_to,
        "unassigned": unassigned, **found.params(), **cursor_params(cursor),
        "limit": limit + 1, "walk": SEARCH_WALK,
    }).all()
    hits = [r for r in rows if getattr(r, "hit", True)]
    chats = [ChatInfo.from_row(r) for r in hits[:limit]]
    if len(hits) > limit:
        next_cursor: str | None = encode_cursor(chats[-1].last_message_at, chats[-1].id)
    elif rows and getattr(rows[-1], "walked", 0) == SEARCH_WALK:
        # The walk used its budget before the page filled: go on from where it stopped.
        next_cursor = encode_cursor(rows[-1].last_message_at, rows[-1].id)
    else:
        next_cursor = None
    return ChatPage(chats, next_cursor)


def get_chat(session: Session, chat_id: uuid.UUID | str, *,
             workspace_id: str | None = None) -> ChatDetail:
    """The chat, its contact, its unread count and status, its latest message."""
    r = session.execute(text(sql.CHAT), {"chat_id": _chat_id(chat_id),
                                        "workspace_id": workspace_id}).one_or_none()
    if r is None:
        raise ChatNotFound(f"chat {chat_id} does not exist", field="chat_id")
    contact = ContactInfo(r.contact_id, r.phone, r.name, r.is_group, r.email, r.notes,
                          list(r.tags), r.contact_created_at)
    last = None
    if r.last_id is not None:
        last = {"id": str(r.last_id), "direction": r.last_direction, "type": r.last_type,
                "body": None if r.last_deleted_at else r.last_body, "status": r.last_status,
                "created_at": _iso(r.last_created_at), "sent_at": _iso(r.last_sent_at),
                "deleted": r.last_deleted_at is not None}
    return ChatDetail(ChatInfo.from_row(r), contact, last)


def chat_address(session: Session, chat_id: uuid.UUID | str, *,
                 workspace_id: str | None = None) -> tuple[uuid.UUID, str]:
    """(channel id, WhatsApp chat id): where a message into this chat goes."""
    r = session.execute(text(sql.CHAT_ADDRESS), {"chat_id": _chat_id(chat_id),
                                                "workspace_id": workspace_id}).one_or_none()
    if r is None:
        raise ChatNotFound(f"chat {chat_id} does not exist", field="chat_id")
    return r.channel_id, str(r.wa_chat_id)


def assign_chat(session: Session, chat_id: uuid.UUID | str, user_id: uuid.UUID | None, *,
                workspace_id: str | None = None) -> None:
    """Assign the chat to an active user of its workspace, or (None) to
    nobody; `InvalidInput` for anyone else, and nothing changes."""
    row = session.execute(text(sql.ASSIGN_CHAT), {
        "chat_id": _chat_id(chat_id), "assigned_to": user_id,
        "workspace_id": workspace_id}).one()
    if row.chat_id is None:
        raise ChatNotFound(f"chat {chat_id} does not exist", field="chat_id")
    if not row.assignee_ok:
        raise InvalidInput(f"{user_id} is not an active user of this workspace",
                           field="assigned_to")


def archive_chat(session: Session, chat_id: uuid.UUID | str, *,
                 workspace_id: str | None = None) -> str:
    return _set_status(session, chat_id, ChatStatus.ARCHIVED, workspace_id)


def unarchive_chat(session: Session, chat_id: uuid.UUID | str, *,
                   workspace_id: str | None = None) -> str:
    return _set_status(session, chat_id, ChatStatus.ACTIVE, workspace_id)


def mark_chat_read(session: Session, chat_id: uuid.UUID | str, *,
                   workspace_id: str | None = None, receipt: bool = True,
                   max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> int:
    """Unread count to 0; the chat's inbound messages become `read`, and
    (`receipt`) WhatsApp is told the latest one was read: an outbox row of
    kind `read` the dispatcher sends. Returns how many messages changed."""
    row = session.execute(text(sql.MARK_CHAT_READ), {
        "chat_id": _chat_id(chat_id), "workspace_id": workspace_id, "receipt": receipt,
        "max_attempts": max_attempts}).one()
    if row.chat_id is None:
        raise ChatNotFound(f"chat {chat_id} does not exist", field="chat_id")
    return int(row.messages_read)


def thread(session: Session, chat_id: uuid.UUID | str, *, workspace_id: str | None = None,
           before: str | None = None, after: str | None = None,
           limit: int = DEFAULT_PAGE_SIZE) -> ThreadPage:
    """A page of the chat's messages, newest first: the latest, those
    `before` a cursor (older), or those `after` one (newer, the oldest of
    them first in time, shown newest first)."""
    check_limit(limit)
    if before and after:
        raise InvalidInput("give before or after, not both", field="after")
    chat_address(session, chat_id, workspace_id=workspace_id)  # 404 unless the caller's
    params: dict[str, Any] = {"chat_id": _chat_id(chat_id), "limit": limit + 1}
    if after:
        at, mid = decode_cursor(after, field="after")
        rows = session.execute(text(sql.THREAD_AFTER),
                               {**params, "cursor_at": at, "cursor_id": mid}).all()
        page = [_message(r) for r in rows[:limit]][::-1]
        # Older ones exist (the cursor's message at least).
        newest = page[0] if page else None
        return ThreadPage(page, _cursor(page[-1]) if page else after,
                          _cursor(newest) if newest else after)
    rows = session.execute(text(sql.THREAD_BEFORE),
                           {**params, **cursor_params(before, field="before")}).all()
    page = [_message(r) for r in rows[:limit]]
    more = len(rows) > limit
    return ThreadPage(page, _cursor(page[-1]) if more else None,
                      _cursor(page[0]) if page else None)


def _message(r: Row[Any]) -> dict[str, Any]:
    deleted = r.deleted_at is not None
    return {
        "id": str(r.id), "direction": r.direction, "type": r.type,
        # Deleted for everyone: the row stays, its content does not.
        "body": None if deleted else r.body, "payload": {} if deleted else r.payload,
        "status": r.status, "wa_message_id": r.wa_message_id, "error": r.error,
        "reactions": {k: v for k, v in r.reactions.items() if v.get("emoji")},
        "edited": r.edited_at is not None, "edited_at": _iso(r.edited_at),
        "deleted": deleted, "deleted_at": _iso(r.deleted_at),
        "created_at": _iso(r.created_at), "updated_at": _iso(r.updated_at),
        "sent_at": _iso(r.sent_at), "delivered_at": _iso(r.delivered_at),
        "read_at": _iso(r.read_at),
    }


def _cursor(message: dict[str, Any]) -> str:
    return encode_cursor(datetime.fromisoformat(message["created_at"]),
                         uuid.UUID(message["id"]))


def _set_status(session: Session, chat_id: uuid.UUID | str, status: ChatStatus,
                workspace_id: str | None) -> str:
    row = session.execute(text(sql.SET_CHAT_STATUS), {
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


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def _str(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None
