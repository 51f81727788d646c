"""A workspace's events after a cursor: the polling endpoint's page, and
the stream's catch-up before it goes live.

An event as clients see it (the contract the console and callbacks share):

    {"id": 123, "type": "message.read", "occurred_at": "2026-...+00:00",
     "channel_id": "...", "chat_id": "...", "message_id": "...", "payload": {...}}

Ids only grow along a workspace's stream (db/event_queries.py says why
`id > last` never skips one), so a client keeps the last id it got and
asks for what comes after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from outbox.db import event_queries as q
from outbox.db.states import EventType
from outbox.errors import EventsExpired, InvalidInput
from outbox.jsonio import dumps_unicode

DEFAULT_EVENT_PAGE = 100
MAX_EVENT_PAGE = 1000


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    type: str
    occurred_at: datetime
    channel_id: uuid.UUID | None
    chat_id: uuid.UUID | None
    message_id: uuid.UUID | None
    payload: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, "occurred_at": self.occurred_at.isoformat(),
                "channel_id": _str(self.channel_id), "chat_id": _str(self.chat_id),
                "message_id": _str(self.message_id), "payload": self.payload}

    def as_json(self) -> str:
        return dumps_unicode(self.as_dict())

    @classmethod
    def of(cls, r: Any) -> Event:
        return cls(int(r.id), r.type, r.occurred_at, r.channel_id, r.chat_id, r.message_id,
                   r.payload)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events a client wants: some types (None: all), one chat (None: all)."""

    types: frozenset[str] | None = None
    chat_id: uuid.UUID | None = None

    def matches(self, type_: str, chat_id: uuid.UUID | None) -> bool:
        return ((self.types is None or type_ in self.types)
                and (self.chat_id is None or chat_id == self.chat_id))

    def params(self) -> dict[str, Any]:
        return {"types": sorted(self.types) if self.types is not None else None,
                "chat_id": self.chat_id}


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[Event]
    # The cursor for the next call: the last event's id, or past events the
    # filter left out. Every event up to it has been considered.
    next_after: int
    has_more: bool


def parse_filter(types: str | Iterable[str] | None, chat_id: str | None) -> EventFilter:
    """`types=message.read,message.failed` and `chat_id=<uuid>` from a query
    string; InvalidInput naming the field for anything else."""
    wanted: frozenset[str] | None = None
    if types is not None:
        names = types.split(",") if isinstance(types, str) else list(types)
        wanted = frozenset(n.strip() for n in names if n.strip())
        unknown = sorted(wanted - set(EventType))
        if unknown:
            raise InvalidInput(f"unknown event type {unknown[0][:60]!r}: one of "
                               f"{', '.join(EventType)}", field="types")
        if not wanted:
            raise InvalidInput("types: give at least one event type", field="types")
    chat: uuid.UUID | None = None
    if chat_id is not None:
        try:
            chat = uuid.UUID(chat_id.strip())
        except ValueError:
            raise InvalidInput("chat_id must be a chat's id (a UUID)", field="chat_id") from None
    return EventFilter(wanted, chat)


def parse_cursor(value: str | int | None, *, field: str = "after") -> int | None:
    """An event id (Last-Event-ID or `after`): a non-negative integer."""
    if value is None or value == "":
        return None
    try:
        cursor = int(str(value).strip())
    except ValueError:
        raise InvalidInput(f"{field} must be an event id (an integer)", field=field) from None
    if cursor < 0 or cursor >= 2**63:
        raise InvalidInput(f"{field} must be an event id (an integer)", field=field)
    return cursor


def read_events(session: Session, *, workspace_id: str, after: int,
                limit: int = DEFAULT_EVENT_PAGE, wanted: EventFilter = EventFilter()) -> EventPage:
    """The workspace's events after `after`, oldest first, at most `limit`.
    `after` 0: from the oldest held. EventsExpired when events after
    `after` may have been pruned."""
    if not 1 <= limit <= MAX_EVENT_PAGE:
        raise InvalidInput(f"limit must be 1 to {MAX_EVENT_PAGE}", field="limit")
    check_not_expired(session, workspace_id=workspace_id, after=after)
    rows = session.execute(text(q.EVENTS_AFTER), {
        "workspace_id": workspace_id, "after": after, "limit": limit, **wanted.params()}).all()
    horizon = int(rows[0].horizon)
    events = [Event.of(r) for r in rows if r.id is not None]
    if len(events) == limit:
        return EventPage(events, events[-1].id, True)
    # Everything below the horizon was read: the cursor may move up to it.
    return EventPage(events, max(after, horizon - 1, events[-1].id if events else 0), False)


def check_not_expired(session: Session, *, workspace_id: str, after: int) -> None:
    """EventsExpired if ids after `after` may have been pruned: pruning
    deletes an unbroken range from the oldest (db/event_queries.py), so
    anything below the oldest id held is gone."""
    if after == 0:
        return
    oldest = session.execute(text(q.OLDEST_EVENT)).scalar_one_or_none()
    if oldest is not None and after < int(oldest) - 1:
        held = session.execute(text(q.OLDEST_WORKSPACE_EVENT),
                               {"workspace_id": workspace_id}).scalar_one_or_none()
        raise EventsExpired(
            f"events after {after} are past retention and were deleted: reload, then "
            "follow from oldest_id", oldest_id=int(held) if held is not None else None,
            field="after")


def frames(events: Sequence[Event]) -> str:
    return "".join(sse_frame(e.id, e.type, e.as_json()) for e in events)


def sse_frame(event_id: int, type_: str, data: str) -> str:
    """One Server-Sent Events frame; `data` is one line of JSON."""
    return f"id: {event_id}\nevent: {type_}\ndata: {data}\n\n"


def _str(value: uuid.UUID | None) -> str | None:
    return str(value) if value is not None else None
