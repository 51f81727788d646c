"""What a caller can send, validated before anything touches the database.

Validation is pure: it raises a typed `InvalidInput` with one clear line, or
returns the normalised form the enqueue statement needs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from outbox.errors import InvalidInput, InvalidMessage, InvalidSchedule

if TYPE_CHECKING:
    from outbox.phone import Recipient

MAX_TEXT_LENGTH = 4096  # WhatsApp's limit for a text message body
MAX_CAPTION_LENGTH = 1024  # WhatsApp's limit for a media caption
MAX_MEDIA_REF_LENGTH = 2048  # a URL or a media id; base64 uploads go through Whapi's /media
MAX_FILENAME_LENGTH = 255
MAX_IDEMPOTENCY_KEY_LENGTH = 255
MAX_SCHEDULE_AHEAD = timedelta(days=365)  # OUTBOX_MAX_SCHEDULE_AHEAD
PRIORITY_RANGE = (-1000, 1000)
MEDIA_TYPES = ("image", "video", "document", "audio")


@dataclass(frozen=True, slots=True)
class TextMessage:
    """A text message, for `enqueue_many`."""

    channel_id: uuid.UUID | str
    to: str
    body: str
    idempotency_key: str | None = None
    priority: int = 0
    send_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MediaMessage:
    """An image, video, document or audio message by URL (or Whapi media id)."""

    channel_id: uuid.UUID | str
    to: str
    media_type: str
    media: str
    caption: str | None = None
    filename: str | None = None
    mime_type: str | None = None
    idempotency_key: str | None = None
    priority: int = 0
    send_at: datetime | None = None


NewMessage = TextMessage | MediaMessage


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A validated message, ready for the enqueue statement."""

    channel_id: uuid.UUID
    recipient: Recipient
    message_type: str
    body: str | None  # text body or caption: what people read
    payload: dict[str, Any]  # the provider's fields other than `to`
    idempotency_key: str | None
    priority: int
    send_at: datetime | None


def parse_channel_id(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value).strip())
    except ValueError:
        raise InvalidInput(
            f"channel id {_quote(str(value))} is not a valid id", field="channel_id"
        ) from None


def prepare(message: NewMessage, *, default_region: str | None = None,
            max_schedule_ahead: timedelta = MAX_SCHEDULE_AHEAD) -> PreparedMessage:
    channel_id = parse_channel_id(message.channel_id)
    # Here, not at the top: settings import this module, and the dispatcher
    # (which never parses a phone number) should not load phonenumbers.
    from outbox.phone import normalize_recipient

    recipient = normalize_recipient(message.to, default_region=default_region)
    key = _check_idempotency_key(message.idempotency_key)
    priority = _check_priority(message.priority)
    send_at = _check_send_at(message.send_at, max_schedule_ahead)
    if isinstance(message, TextMessage):
        body = _check_text(message.body, "body", MAX_TEXT_LENGTH)
        return PreparedMessage(
            channel_id, recipient, "text", body, {"body": body}, key, priority, send_at
        )
    return _prepare_media(message, channel_id, recipient, key, priority, send_at)


def _prepare_media(
    message: MediaMessage,
    channel_id: uuid.UUID,
    recipient: Recipient,
    key: str | None,
    priority: int,
    send_at: datetime | None,
) -> PreparedMessage:
    if message.media_type not in MEDIA_TYPES:
        raise InvalidMessage(
            f"media type {_quote(str(message.media_type))} is not one of {', '.join(MEDIA_TYPES)}",
            field="media_type",
        )
    media = _check_text(message.media, "media", MAX_MEDIA_REF_LENGTH)
    payload: dict[str, Any] = {"media": media}
    caption = None
    if message.caption is not None:
        if message.media_type == "audio":
            raise InvalidMessage("audio messages can't have a caption", field="caption")
        caption = _check_text(message.caption, "caption", MAX_CAPTION_LENGTH)
        payload["caption"] = caption
    if message.filename is not None:
        if message.media_type != "document":
            raise InvalidMessage("only documents have a filename", field="filename")
        payload["filename"] = _check_text(message.filename, "filename", MAX_FILENAME_LENGTH)
    if message.mime_type is not None:
        payload["mime_type"] = _check_text(message.mime_type, "mime_type", 255)
    return PreparedMessage(
        channel_id, recipient, message.media_type, caption, payload, key, priority, send_at
    )


def _check_text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidMessage(f"{field} must be a string", field=field)
    if not value.strip():
        raise InvalidMessage(f"{field} is empty", field=field)
    if len(value) > limit:
        raise InvalidMessage(
            f"{field} is {len(value)} characters, over the limit of {limit}", field=field
        )
    if "\x00" in value:
        # PostgreSQL text can't hold NUL, and WhatsApp would not show it.
        raise InvalidMessage(f"{field} contains a NUL character", field=field)
    if not is_utf8(value):
        raise InvalidMessage(f"{field} contains an unpaired surrogate", field=field)
    return value


def is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_workspace_id(workspace_id: object) -> str:
    """A workspace id: 1 to 100 printable characters."""
    if not isinstance(workspace_id, str):
        raise InvalidInput("workspace must be text", field="workspace_id")
    workspace_id = workspace_id.strip()
    if (not workspace_id or len(workspace_id) > 100 or "\x00" in workspace_id
            or not is_utf8(workspace_id)):
        raise InvalidInput("workspace must be 1 to 100 characters", field="workspace_id")
    return workspace_id


def _check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip():
        raise InvalidInput("idempotency key is empty", field="idempotency_key")
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH or "\x00" in key or not is_utf8(key):
        raise InvalidInput(
            f"idempotency key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} printable characters",
            field="idempotency_key",
        )
    return key


def _check_priority(priority: int) -> int:
    low, high = PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise InvalidInput(
            f"priority must be an integer from {low} to {high}", field="priority"
        )
    return priority


def _check_send_at(send_at: datetime | None, max_ahead: timedelta) -> datetime | None:
    if send_at is None:
        return None
    if not isinstance(send_at, datetime):
        raise InvalidSchedule("send_at must be a datetime", field="send_at")
    if send_at.tzinfo is None or send_at.tzinfo.utcoffset(send_at) is None:
        raise InvalidSchedule(
            "send_at has no timezone: give one (e.g. 2026-01-31T09:00:00+00:00)",
            field="send_at",
        )
    try:
        # PostgreSQL takes offsets up to 15:59 and psycopg reads years
        # 1..9999 back: bind the UTC time, which is both.
        utc = send_at.astimezone(UTC)
    except OverflowError:
        raise InvalidSchedule("send_at is out of range (years 1 to 9999, UTC)",
                              field="send_at") from None
    # A row scheduled decades ahead is a typo or an attempt to fill the queue.
    if utc - datetime.now(UTC) > max_ahead:
        raise InvalidSchedule(
            f"send_at is more than {_days(max_ahead)} ahead (OUTBOX_MAX_SCHEDULE_AHEAD)",
            field="send_at")
    return utc


def _days(span: timedelta) -> str:
    days = span.total_seconds() / 86400
    return f"{days:g} days" if days >= 1 else f"{span.total_seconds():g} seconds"


def _quote(value: str, limit: int = 40) -> str:
    shown = value if len(value) <= limit else value[:limit] + "…"
    return '"' + shown.replace("\x00", "\\0") + '"'
