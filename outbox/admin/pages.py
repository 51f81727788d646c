"""Keyset pages: the cursor every list hands back, page sizes, search patterns.

A cursor is the sort key of the last row shown, (time, id), opaque to the
caller (URL-safe base64). A page is one index range however deep the
caller pages, and rows that move meanwhile are neither repeated nor skipped
within one snapshot.
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from outbox.errors import InvalidInput
from outbox.message_types import is_utf8

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_QUERY_LENGTH = 100

_NON_DIGITS = re.compile(r"[\s+()\-.]")


def encode_cursor(at: datetime | None, row_id: uuid.UUID) -> str:
    raw = f"{at.isoformat() if at else ''}|{row_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *, field: str = "cursor") -> tuple[datetime | None, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, rid = raw.partition("|")
        when = datetime.fromisoformat(at) if at else None
        if when is not None and when.tzinfo is None:
            raise ValueError("naive")
        return when, uuid.UUID(rid)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput(f"{field} is not one this API returned", field=field) from None


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be from 1 to {MAX_PAGE_SIZE}", field="limit")
    return limit


def cursor_params(cursor: str | None, *, field: str = "cursor") -> dict[str, Any]:
    """A statement's `has_cursor`, `cursor_at`, `cursor_id`."""
    after = decode_cursor(cursor, field=field) if cursor else None
    return {"has_cursor": after is not None, "cursor_at": after[0] if after else None,
            "cursor_id": after[1] if after else None}


@dataclass(frozen=True, slots=True)
class Search:
    """`q` as the LIKE patterns of db/inbox_queries.py's search: the start of
    a name (any case), of a number or group id (digits, without "+")."""

    searching: bool
    name_pattern: str
    digits_pattern: str

    def params(self) -> dict[str, Any]:
        return {"searching": self.searching, "name_pattern": self.name_pattern,
                "digits_pattern": self.digits_pattern}


def search(q: str | None) -> Search:
    if q is None or not q.strip():
        # Never NULL patterns: see db/inbox_queries.py.
        return Search(False, "", "")
    q = q.strip()
    if len(q) > MAX_QUERY_LENGTH or "\x00" in q or not is_utf8(q):
        raise InvalidInput(f"q must be 1 to {MAX_QUERY_LENGTH} characters", field="q")
    name = _escape_like(q) + "%"
    digits = _NON_DIGITS.sub("", q)
    if not digits.isdigit():
        # Not a number: the number's pattern repeats the name's, which
        # matches no number and keeps both arms indexable.
        return Search(True, name, name)
    return Search(True, name, f"{digits}%")


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
