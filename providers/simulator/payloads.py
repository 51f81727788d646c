"""Whapi-shaped webhook bodies, built by plain functions (no I/O).

Every shape follows the published OpenAPI description (1.8.7, purelines/
whapi-sdk `openapi.yaml`); the schema each builder follows is named in its
docstring. The envelope: one object per request, the event's array under
its key (`messages`, `statuses`, `messages_updates`, ...), `"event":
{"type", "event"}` and `"channel_id"`. Timestamps are numbers (seconds) on
messages, calls and chats, strings on statuses (schema `Status`).

Where the spec gives no value (status and health codes), the codes come from
Whapi's support pages and examples: health INIT 1, LAUNCH 2, QR 3, AUTH 4,
ERROR 5; statuses pending 1, sent 2, delivered 3, read 4, played 5. The rest
(failed 0, deleted 6, NOT_INIT 0, SYNC_ERROR 6) follow the enums' order and
are the simulator's guess.
"""

from __future__ import annotations

import copy
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = [
    "ACTION_TYPES",
    "CALL_STATUSES",
    "EVENT_METHODS",
    "EVENT_TYPES",
    "HEALTH_CODES",
    "MEDIA_ID_PATTERN",
    "MEDIA_MIME",
    "MESSAGE_TYPES",
    "STATUS_CODES",
    "action_message",
    "call_event",
    "chat_object",
    "default_content",
    "envelope",
    "health_object",
    "message_object",
    "message_update",
    "new_media_id",
    "new_message_id",
    "status_entry",
    "user_object",
]

#: Schema `WebhookEventType` and `Event.method`.
EVENT_TYPES: Final = (
    "messages", "statuses", "chats", "contacts", "groups", "presences", "calls", "channel",
    "users", "labels", "service",
)
EVENT_METHODS: Final = ("post", "put", "patch", "delete")

#: Schema `MessageType`.
MESSAGE_TYPES: Final = frozenset({
    "text", "image", "video", "gif", "audio", "voice", "short", "document",
    "documentWithCaption", "link_preview", "location", "live_location", "contact",
    "contact_list", "sticker", "system", "call", "unknown", "action", "group_invite",
    "newsletter_invite", "admin_invite", "product", "catalog", "interactive", "reply", "poll",
    "hsm", "order", "story", "event", "buttons", "list", "pin", "carousel",
})
#: Schema `MessageAction.type`.
ACTION_TYPES: Final = frozenset({
    "edited", "edit", "delete", "reaction", "ephemeral", "vote", "comment", "event_response",
    "pin", "unpin",
})
#: Schema `StatusEnum` → `Status.code`.
STATUS_CODES: Final[Mapping[str, int]] = {
    "failed": 0, "pending": 1, "sent": 2, "delivered": 3, "read": 4, "played": 5, "deleted": 6,
}
#: Schema `ChannelStatus.text` → `code`.
HEALTH_CODES: Final[Mapping[str, int]] = {
    "NOT_INIT": 0, "INIT": 1, "LAUNCH": 2, "QR": 3, "AUTH": 4, "ERROR": 5, "SYNC_ERROR": 6,
}
#: Schema `CallEvent.status`.
CALL_STATUSES: Final = ("initiated", "ringing", "missed", "canceled", "answered")
#: Schema `MediaID`.
MEDIA_ID_PATTERN: Final = re.compile(r"^(?:media_init|[A-Za-z0-9]+-[0-9A-Fa-f-]+)$")

MEDIA_MIME: Final[Mapping[str, str]] = {
    "image": "image/jpeg", "video": "video/mp4", "short": "video/mp4", "gif": "video/mp4",
    "audio": "audio/mpeg", "voice": "audio/ogg; codecs=opus", "document": "application/pdf",
    "sticker": "image/webp",
}
_VCARD = "BEGIN:VCARD\nVERSION:3.0\nFN:{name}\nTEL;type=CELL:+{phone}\nEND:VCARD"


def _urlsafe(nbytes: int) -> str:
    # Whapi's id alphabet (schema MessageID) has '.' and '_' but no '-' inside a part.
    return secrets.token_urlsafe(nbytes).replace("-", ".")


def new_message_id() -> str:
    """An id matching schema `MessageID` (`<4-30>-<4-14>` of `[A-Za-z0-9._]`)."""
    return f"{_urlsafe(16)}-{_urlsafe(8)}"


def new_media_id(kind: str) -> str:
    """An id matching schema `MediaID` (`<alnum>-<hex>`)."""
    prefix = "".join(ch for ch in kind if ch.isalnum()) or "media"
    return f"{prefix}-{secrets.token_hex(8)}"


def envelope(
    payload: Mapping[str, Any], event_type: str, method: str, channel_id: str
) -> dict[str, Any]:
    """Schema `WebhookPayload`: the event's arrays plus `event` and `channel_id`."""
    return {**payload, "event": {"type": event_type, "event": method}, "channel_id": channel_id}


def _media_file(kind: str, at: int, media_id: str | None) -> dict[str, Any]:
    """Schema `MediaFile` (required: id, mime_type, file_size, timestamp)."""
    mid = media_id or new_media_id(MEDIA_MIME.get(kind, "application/octet-stream")
                                   .split("/")[1].split(";")[0])
    return {
        "id": mid,
        "mime_type": MEDIA_MIME.get(kind, "application/octet-stream"),
        "file_size": 48_213,
        "sha256": secrets.token_hex(32),
        "timestamp": at,
        "link": f"https://example.invalid/media/{mid}",
    }


def default_content(
    kind: str, *, text: str | None, at: int, media_id: str | None = None, phone: str = ""
) -> dict[str, Any] | None:
    """The type-specific object of an inbound message (schemas `MessageContent*`).

    `text` is the body (text, link_preview, system) or the caption (media,
    location comment). None for types without a content object (`call`).
    """
    if kind == "text":
        return {"body": text if text is not None else "Hello from the simulator"}
    if kind in ("image", "video", "short", "gif"):
        content = _media_file(kind, at, media_id)
        if text is not None:
            content["caption"] = text
        content.update(width=1280, height=720)
        if kind != "image":
            content["seconds"] = 7
        if kind == "gif":
            content["autoplay"] = True
        return content
    if kind in ("audio", "voice"):
        return {**_media_file(kind, at, media_id), "seconds": 4}
    if kind == "document":
        content = {**_media_file(kind, at, media_id), "file_name": "invoice.pdf", "page_count": 1}
        if text is not None:
            content["caption"] = text
        return content
    if kind == "sticker":
        return {**_media_file(kind, at, media_id), "animated": False, "width": 512,
                "height": 512}
    if kind == "location":
        content = {"latitude": 52.520008, "longitude": 13.404954, "name": "Alexanderplatz",
                   "address": "Alexanderplatz, 10178 Berlin"}
        if text is not None:
            content["comment"] = text
        return content
    if kind == "live_location":
        return {"latitude": 52.520008, "longitude": 13.404954, "accuracy": 12, "speed": 0,
                "degrees": 90, "caption": text if text is not None else "On my way",
                "sequence_number": 1, "time_offset": 0}
    if kind == "contact":
        return {"name": "Ann Example", "vcard": _VCARD.format(name="Ann Example",
                                                              phone="15550100999")}
    if kind == "contact_list":
        return {"list": [
            {"name": name, "vcard": _VCARD.format(name=name, phone=phone_)}
            for name, phone_ in (("Ann Example", "15550100998"), ("Bo Example", "15550100997"))
        ]}
    if kind == "link_preview":
        return {"body": text if text is not None else "Tracking: https://example.com/t/42",
                "url": "https://example.com/t/42", "title": "Your parcel",
                "description": "Out for delivery"}
    if kind == "poll":
        return {"title": text if text is not None else "Delivery slot?",
                "options": ["Morning", "Afternoon"], "vote_limit": 1, "total": 0,
                "results": [{"id": secrets.token_hex(8), "name": name, "count": 0, "voters": []}
                            for name in ("Morning", "Afternoon")]}
    if kind == "interactive":
        # MessageContentInteractive includes schema MediaFile: an image header.
        return {**_media_file("image", at, media_id),
                "header": {"text": "Order #1042"},
                "body": {"text": text if text is not None else "Is this address right?"},
                "footer": {"text": "Reply with a button"},
                "action": {"buttons": [{"type": "quick_reply", "title": "Yes", "id": "yes"},
                                       {"type": "quick_reply", "title": "No", "id": "no"}]},
                "type": "button"}
    if kind == "reply":
        return {"type": "buttons_reply",
                "buttons_reply": {"id": "ButtonsV3:yes", "title": text if text else "Yes"}}
    if kind == "system":
        return {"body": text if text is not None else
                "Messages and calls are end-to-end encrypted."}
    if kind == "call":
        return None
    if kind == "product":
        return {"catalog_id": phone or "15550100000", "product_id": "1234567890123"}
    if kind == "order":
        return {"order_id": "1234567890123", "seller": phone or "15550100000",
                "title": "Order", "text": text or "", "item_count": 1,
                "currency": "USD", "total_price": 10, "status": "new"}
    return {"body": text} if text is not None else {}


def message_object(
    *,
    message_id: str,
    kind: str,
    chat_id: str,
    at: int,
    from_me: bool,
    source: str,
    sender: str | None,
    sender_name: str | None,
    content: Mapping[str, Any] | None,
    status: str | None = None,
    context: Mapping[str, Any] | None = None,
    chat_name: str | None = None,
    subtype: str | None = None,
) -> dict[str, Any]:
    """Schema `Message` (required: id, type, chat_id, from_me, timestamp)."""
    message: dict[str, Any] = {
        "id": message_id, "from_me": from_me, "type": kind, "chat_id": chat_id,
        "timestamp": at, "source": source,
    }
    if subtype is not None:
        message["subtype"] = subtype
    if chat_name is not None:
        message["chat_name"] = chat_name
    if sender is not None:
        message["from"] = sender
    if sender_name is not None:
        message["from_name"] = sender_name
    if status is not None:
        message["status"] = status
    if content is not None:
        message[kind] = dict(content)
    if context:
        message["context"] = dict(context)
    return message


def action_message(
    *,
    message_id: str,
    chat_id: str,
    at: int,
    from_me: bool,
    source: str,
    sender: str | None,
    sender_name: str | None,
    action: Mapping[str, Any],
) -> dict[str, Any]:
    """A `messages` entry of type `action` (schema `MessageAction` under `action`)."""
    return message_object(message_id=message_id, kind="action", chat_id=chat_id, at=at,
                          from_me=from_me, source=source, sender=sender,
                          sender_name=sender_name, content=action)


def message_update(
    *,
    before: Mapping[str, Any],
    after_content: Mapping[str, Any],
    changes: Sequence[str],
    trigger: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Schema `MessageUpdate`: the message before and after, and what changed."""
    after = copy.deepcopy(dict(before))
    after[after["type"]] = dict(after_content)
    update: dict[str, Any] = {"id": before["id"], "before_update": dict(before),
                              "after_update": after, "changes": list(changes)}
    if trigger is not None:
        update["trigger"] = dict(trigger)
    return update


def status_entry(
    *,
    message_id: str,
    status: str,
    recipient_id: str | None,
    at: float,
    errors: Sequence[Mapping[str, Any]] | None = None,
    viewer_id: str | None = None,
    code: int | None = None,
) -> dict[str, Any]:
    """Schema `Status` (required: id, code, status, timestamp; timestamp a string)."""
    entry: dict[str, Any] = {
        "id": message_id,
        "code": STATUS_CODES.get(status, 0) if code is None else code,
        "status": status,
        "timestamp": str(int(at)),
    }
    if recipient_id is not None:
        entry["recipient_id"] = recipient_id
    if viewer_id is not None:
        entry["viewer_id"] = viewer_id
    if errors:
        entry["errors"] = [dict(e) for e in errors]
    return entry


def chat_object(
    *,
    chat_id: str,
    at: int,
    name: str | None = None,
    archive: bool | None = None,
    unread: int | None = None,
    last_message: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Schema `Chat` (required: id, type)."""
    kind = "group" if chat_id.endswith("@g.us") else (
        "newsletter" if chat_id.endswith("@newsletter") else "contact")
    chat: dict[str, Any] = {"id": chat_id, "type": kind, "timestamp": at, "not_spam": True}
    if name is not None:
        chat["name"] = name
    if archive is not None:
        chat["archive"] = archive
    if unread is not None:
        chat["unread"] = unread
    if last_message is not None:
        chat["last_message"] = dict(last_message)
    return chat


def call_event(
    *,
    chat_id: str,
    sender: str,
    status: str,
    at: int,
    video: bool,
    group: bool,
    offline: bool,
    call_id: str | None = None,
) -> dict[str, Any]:
    """Schema `CallEvent`. `from` is the caller's chat id and the timestamp is
    in milliseconds, as on Whapi's support page (the spec says int64 only)."""
    return {
        "id": call_id or secrets.token_hex(16).upper(), "chat_id": chat_id, "status": status,
        "from": sender, "timestamp": at * 1000, "group_call": group, "video_call": video,
        "offline_call": offline,
    }


def health_object(
    *, status_text: str, channel_id: str, started_at: float, user: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Schema `Health` (required: start_at, uptime, status)."""
    health: dict[str, Any] = {
        "channel_id": channel_id,
        "start_at": int(started_at),
        "uptime": max(0, int(time.time() - started_at)),
        "status": {"code": HEALTH_CODES.get(status_text, 0), "text": status_text},
        "version": "simulator",
    }
    if user is not None:
        health["user"] = dict(user)
    return health


def user_object(*, phone: str, name: str) -> dict[str, Any]:
    """Schema `Contact` (required: id, name): the channel's own account."""
    return {"id": phone, "name": name}
