"""Request and response bodies of the HTTP API (also its OpenAPI schema)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from outbox.states import Direction, MessageStatus, OutboxStatus


class SendMessage(BaseModel):
    """A text message (`text`), or a media message (`media_type` + `media`)."""

    model_config = ConfigDict(extra="forbid")

    channel_id: StrictStr
    to: StrictStr = Field(description="E.164 phone number or WhatsApp chat id")
    text: StrictStr | None = None
    media_type: StrictStr | None = Field(default=None, description="image|video|document|audio")
    media: StrictStr | None = Field(default=None, description="URL or Whapi media id")
    caption: StrictStr | None = None
    filename: StrictStr | None = None
    mime_type: StrictStr | None = None
    idempotency_key: StrictStr | None = None
    priority: StrictInt = 0
    send_at: datetime | None = Field(
        default=None, description="ISO 8601 with a timezone, e.g. 2026-01-31T09:00:00+00:00")

    def media_fields(self) -> dict[str, Any]:
        return {k: v for k, v in (("media_type", self.media_type), ("media", self.media),
                                  ("caption", self.caption), ("filename", self.filename),
                                  ("mime_type", self.mime_type)) if v is not None}


class MessageQueued(BaseModel):
    message_id: uuid.UUID
    outbox_id: int | None
    chat_id: uuid.UUID
    status: MessageStatus
    duplicate: bool


class MessageDetail(BaseModel):
    message_id: uuid.UUID
    channel_id: uuid.UUID
    chat_id: uuid.UUID
    to: str
    direction: Direction
    type: str
    status: MessageStatus
    wa_message_id: str | None
    error: str | None
    idempotency_key: str | None
    attempts: int | None = Field(description="null once the outbox row is pruned")
    max_attempts: int | None
    outbox_status: OutboxStatus | None
    last_error: str | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in ((400, "Malformed JSON"), (401, "Missing or invalid credentials"),
                       (403, "The credentials lack a scope the route needs"),
                       (404, "Not found (or another workspace's)"),
                       (409, "Channel disabled"), (422, "Invalid field"))
}
