"""Whapi's send endpoints as the simulator checks them: required fields per
endpoint (schemas `Sender*`), `to`'s pattern, and which endpoints can answer
404 "Media with specified id not found" (those whose spec lists it)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any, Final

from outbox.providers.simulator.payloads import MEDIA_ID_PATTERN, MEDIA_MIME

__all__ = [
    "MEDIA_404_KINDS",
    "REQUIRED_FIELDS",
    "TO_PATTERN",
    "media_id_of",
    "send_content",
    "validate_send",
]

TO_PATTERN: Final = re.compile(r"^[\d-]{9,31}(@[\w\.]{1,})?$")

_MEDIA_KINDS: Final = ("image", "video", "gif", "short", "document", "audio", "voice", "sticker")
#: endpoint -> required fields and their JSON kind (schemas Sender*; `to` apart).
REQUIRED_FIELDS: Final[Mapping[str, tuple[tuple[str, str], ...]]] = {
    "text": (("body", "str"),),
    **{kind: (("media", "str"),) for kind in _MEDIA_KINDS},
    "link_preview": (("body", "str"), ("title", "str")),
    "location": (("latitude", "num"), ("longitude", "num")),
    "live_location": (("latitude", "num"), ("longitude", "num")),
    "contact": (("name", "str"), ("vcard", "str")),
    "contact_list": (("list", "list"),),
    "poll": (("title", "str"), ("options", "list")),
    "interactive": (("action", "obj"),),
    "carousel": (("cards", "list"),),
}
#: Endpoints whose spec documents 404 "Media with specified id not found".
MEDIA_404_KINDS: Final = frozenset({
    *_MEDIA_KINDS, "link_preview", "interactive", "carousel",
})


def _field_problem(name: str, kind: str, value: Any) -> str | None:
    if value is None:
        return f"Parameter '{name}' is required"
    if kind == "num":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"Parameter '{name}' must be a number"
    elif kind == "list":
        if not isinstance(value, list) or not value:
            return f"Parameter '{name}' must be a non-empty array"
    elif kind == "obj":
        if not isinstance(value, dict):
            return f"Parameter '{name}' must be an object"
    elif not isinstance(value, str) or not value.strip():
        return f"Parameter '{name}' must be a non-empty string"
    return None


def validate_send(kind: str, data: Mapping[str, Any]) -> str | None:
    """A validation error message, or None when the body is fine."""
    to = data.get("to")
    if to is None:
        return "Parameter 'to' is required"
    if not isinstance(to, str) or not TO_PATTERN.match(to):
        return "Parameter 'to' does not match pattern ^[\\d-]{9,31}(@[\\w\\.]{1,})?$"
    for name, field_kind in REQUIRED_FIELDS[kind]:
        problem = _field_problem(name, field_kind, data.get(name))
        if problem is not None:
            return problem
    if kind == "poll" and len(data["options"]) < 2:
        return "Parameter 'options' must have 2 to 12 items"
    typing_time = data.get("typing_time")
    if typing_time is not None and (
        isinstance(typing_time, bool)
        or not isinstance(typing_time, int | float)
        or not 0 <= typing_time <= 60
    ):
        return "Parameter 'typing_time' must be between 0 and 60"
    return None


def media_id_of(data: Mapping[str, Any]) -> str | None:
    """The media id a body refers to (not a URL, not base64), else None."""
    media = data.get("media")
    if isinstance(media, str) and MEDIA_ID_PATTERN.match(media):
        return media
    return None


#: Content objects that include schema MediaFile (required: id, mime_type,
#: file_size, timestamp): the media types, and interactive (the spec's
#: MessageContentInteractive includes it too).
_MEDIA_FILE_KINDS: Final = frozenset({*_MEDIA_KINDS, "interactive"})
# A URL is not fetched: its size is unknown, so a plausible one is reported.
_URL_FILE_SIZE: Final = 48_213


def send_content(kind: str, data: Mapping[str, Any], at: int) -> dict[str, Any]:
    """The type-specific part of the sent message object (media is not echoed)."""
    content = {k: v for k, v in data.items() if k not in ("to", "media")}
    if kind not in _MEDIA_FILE_KINDS:
        return content
    media = data.get("media")
    size = _URL_FILE_SIZE
    if isinstance(media, str) and media.startswith(("http://", "https://")):
        content["link"] = media
    elif isinstance(media, str) and not MEDIA_ID_PATTERN.match(media):
        size = len(media.partition(",")[2] or media) * 3 // 4  # base64 or a data: URI
    media_id = media_id_of(data) or f"{kind}-{secrets.token_hex(8)}"
    mime = data.get("mime_type")
    content.update(id=media_id, mime_type=mime if isinstance(mime, str) and mime else
                   MEDIA_MIME.get(kind, "image/jpeg"), file_size=size, timestamp=at)
    return content
