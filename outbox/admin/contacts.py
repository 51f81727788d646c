"""Contacts: the people (and groups) a workspace talks to. List and find
them, read one with its chats, change what a team keeps about them (name,
email, notes, tags).

Shared by the HTTP API (`/v1/contacts`); the SQL is db/inbox_queries.py.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from outbox.admin.pages import (
    DEFAULT_PAGE_SIZE,
    check_limit,
    cursor_params,
    encode_cursor,
    search,
)
from outbox.db import inbox_queries as sql
from outbox.errors import ContactNotFound, InvalidInput
from outbox.message_types import is_utf8

MAX_NAME_LENGTH = 200
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a path
MAX_NOTES_LENGTH = 10_000
MAX_TAGS = 50
MAX_TAG_LENGTH = 50
EDITABLE = ("name", "email", "notes", "tags")

# Deliberately loose: one @, a dot in the domain, no spaces. Whether the
# mailbox exists is not ours to know.
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True, slots=True)
class ContactInfo:
    id: uuid.UUID
    phone: str
    name: str | None
    is_group: bool
    email: str | None
    notes: str | None
    tags: list[str]
    created_at: datetime

    @classmethod
    def from_row(cls, r: Row[Any]) -> ContactInfo:
        return cls(r.id, r.phone, r.name, r.is_group, r.email, r.notes, list(r.tags),
                   r.created_at)


@dataclass(frozen=True, slots=True)
class ContactPage:
    contacts: list[ContactInfo]
    next_cursor: str | None


def list_contacts(session: Session, *, workspace_id: str | None = None, q: str | None = None,
                  limit: int = DEFAULT_PAGE_SIZE, cursor: str | None = None) -> ContactPage:
    """Newest first; `q`: the start of a name (any case) or number."""
    check_limit(limit)
    rows = session.execute(text(sql.LIST_CONTACTS), {
        "workspace_id": workspace_id, **search(q).params(), **cursor_params(cursor),
        "limit": limit + 1}).all()
    contacts = [ContactInfo.from_row(r) for r in rows[:limit]]
    more = len(rows) > limit
    last = contacts[-1] if contacts else None
    return ContactPage(contacts, encode_cursor(last.created_at, last.id)
                       if more and last else None)


def get_contact(session: Session, contact_id: uuid.UUID | str, *,
                workspace_id: str | None = None) -> tuple[ContactInfo, list[dict[str, Any]]]:
    """The contact and its chats (one per channel it talks to), newest first."""
    cid = _contact_id(contact_id)
    r = session.execute(text(sql.CONTACT), {"contact_id": cid,
                                            "workspace_id": workspace_id}).one_or_none()
    if r is None:
        raise ContactNotFound(f"contact {contact_id} does not exist", field="contact_id")
    chats = [{"id": str(c.id), "channel_id": str(c.channel_id), "wa_chat_id": c.wa_chat_id,
              "status": c.status, "unread_count": c.unread_count,
              "last_message_at": c.last_message_at.isoformat() if c.last_message_at else None}
             for c in session.execute(text(sql.CONTACT_CHATS), {"contact_id": cid})]
    return ContactInfo.from_row(r), chats


def update_contact(session: Session, contact_id: uuid.UUID | str, changes: Mapping[str, Any],
                   *, workspace_id: str | None = None) -> ContactInfo:
    """Change the fields `changes` names (name, email, notes, tags); null
    clears name, email or notes. Validates everything before writing."""
    unknown = sorted(set(changes) - set(EDITABLE))
    if unknown:
        raise InvalidInput(f"{unknown[0]} can't be changed (only {', '.join(EDITABLE)})",
                           field=unknown[0])
    values: dict[str, Any] = {"name": None, "email": None, "notes": None, "tags": []}
    if "name" in changes:
        values["name"] = _text(changes["name"], "name", MAX_NAME_LENGTH)
    if "email" in changes:
        email = _text(changes["email"], "email", MAX_EMAIL_LENGTH)
        if email is not None and not _EMAIL.match(email):
            raise InvalidInput("email is not an address (name@example.com)", field="email")
        values["email"] = email
    if "notes" in changes:
        values["notes"] = _text(changes["notes"], "notes", MAX_NOTES_LENGTH, strip=False)
    if "tags" in changes:
        values["tags"] = _tags(changes["tags"])
    flags = {f"set_{f}": f in changes for f in EDITABLE}
    r = session.execute(text(sql.UPDATE_CONTACT), {
        "contact_id": _contact_id(contact_id), "workspace_id": workspace_id,
        **values, **flags}).one_or_none()
    if r is None:
        raise ContactNotFound(f"contact {contact_id} does not exist", field="contact_id")
    return ContactInfo.from_row(r)


def _text(value: object, field: str, limit: int, *, strip: bool = True) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be a string or null", field=field)
    if strip:
        value = value.strip()
    if len(value) > limit or "\x00" in value or not is_utf8(value):
        raise InvalidInput(f"{field} must be at most {limit} printable characters", field=field)
    return value or None


def _tags(value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise InvalidInput(f"tags must be a list of at most {MAX_TAGS} strings", field="tags")
    tags: list[str] = []
    for tag in value:
        if not isinstance(tag, str) or not tag.strip() or len(tag.strip()) > MAX_TAG_LENGTH \
                or "\x00" in tag or not is_utf8(tag):
            raise InvalidInput(f"each tag must be 1 to {MAX_TAG_LENGTH} characters",
                               field="tags")
        if tag.strip() not in tags:
            tags.append(tag.strip())
    return tags


def _contact_id(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        raise ContactNotFound(f"contact {str(value)[:40]!r} does not exist",
                              field="contact_id") from None
