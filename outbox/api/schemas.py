"""Request and response bodies of the HTTP API (also its OpenAPI schema)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from outbox.states import Direction, MessageStatus, OutboxStatus


class MessageContent(BaseModel):
    """A text message (`text`), or a media message (`media_type` + `media`)."""

    model_config = ConfigDict(extra="forbid")

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


class SendMessage(MessageContent):
    """A message to a number or chat id on a channel: text (`text`), or
    media (`media_type` + `media`)."""

    channel_id: StrictStr
    to: StrictStr = Field(description="E.164 phone number or WhatsApp chat id")


class SendBatch(BaseModel):
    """Up to 1,000 messages, queued all or nothing."""

    model_config = ConfigDict(extra="forbid")

    messages: list[SendMessage] = Field(min_length=1, max_length=1000)


class MessageQueued(BaseModel):
    message_id: uuid.UUID
    outbox_id: int | None
    chat_id: uuid.UUID
    status: MessageStatus
    duplicate: bool


class BatchQueued(BaseModel):
    messages: list[MessageQueued] = Field(description="in the order given")


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
    body: str | None = Field(default=None, description="the text, or a media caption; null "
                                                         "once deleted for everyone")
    payload: dict[str, Any] = Field(default_factory=dict,
                                    description="the message as sent or received")
    reactions: dict[str, Any] = Field(default_factory=dict,
                                      description='per reactor: {"emoji", "at"}')
    edited_at: datetime | None = None
    deleted_at: datetime | None = None


class MessageSummary(BaseModel):
    message_id: uuid.UUID
    channel_id: uuid.UUID
    chat_id: uuid.UUID
    to: str = Field(description="the chat's WhatsApp id")
    direction: str
    type: str
    status: str
    body: str | None
    wa_message_id: str | None
    error: str | None
    outbox_status: str | None
    attempts: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None


class MessageList(BaseModel):
    messages: list[MessageSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: "
                                                "the last page")


class MessageChanged(BaseModel):
    message_id: uuid.UUID
    status: str


# --- the inbox: chats, threads, contacts -----------------------------------


class ChatSummary(BaseModel):
    id: uuid.UUID
    channel_id: uuid.UUID
    wa_chat_id: str
    contact_id: uuid.UUID | None
    phone: str = Field(description="E.164, or the group's id")
    name: str | None
    is_group: bool
    last_message_at: datetime | None
    last_message_preview: str | None
    unread_count: int
    status: str = Field(description="active|archived")
    assigned_to: uuid.UUID | None = Field(description="the user the chat is assigned to")
    created_at: datetime


class ChatList(BaseModel):
    chats: list[ChatSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: "
                                                "the last page")


class Contact(BaseModel):
    id: uuid.UUID
    phone: str
    name: str | None
    is_group: bool
    email: str | None
    notes: str | None
    tags: list[str]
    created_at: datetime


class LastMessage(BaseModel):
    id: uuid.UUID
    direction: str
    type: str
    body: str | None
    status: str
    created_at: datetime
    sent_at: datetime | None
    deleted: bool


class ChatDetail(ChatSummary):
    contact: Contact
    last_message: LastMessage | None


class ThreadMessage(BaseModel):
    id: uuid.UUID
    direction: str = Field(description="inbound|outbound")
    type: str
    body: str | None = Field(description="null once deleted for everyone")
    payload: dict[str, Any]
    status: str
    wa_message_id: str | None
    error: str | None
    reactions: dict[str, Any] = Field(description='per reactor: {"emoji", "at"}')
    edited: bool
    edited_at: datetime | None
    deleted: bool
    deleted_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None


class Thread(BaseModel):
    messages: list[ThreadMessage] = Field(description="newest first")
    before_cursor: str | None = Field(description="pass as `before` for older messages; "
                                                  "null: there are none")
    after_cursor: str | None = Field(description="pass as `after` for newer messages")


class AssignChat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assigned_to: StrictStr | None = Field(
        description="a user id, `me`, or null to unassign")


class ChatStatus(BaseModel):
    chat_id: uuid.UUID
    status: str


class ChatRead(BaseModel):
    chat_id: uuid.UUID
    messages_read: int = Field(description="inbound messages marked read")


class ContactChat(BaseModel):
    id: uuid.UUID
    channel_id: uuid.UUID
    wa_chat_id: str
    status: str
    unread_count: int
    last_message_at: datetime | None


class ContactDetail(Contact):
    chats: list[ContactChat]


class ContactList(BaseModel):
    contacts: list[Contact]
    next_cursor: str | None


class UpdateContact(BaseModel):
    """The fields to change; null clears name, email or notes."""

    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = None
    email: StrictStr | None = None
    notes: StrictStr | None = None
    tags: list[StrictStr] | None = Field(default=None, max_length=50)


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """A route's documented JSON body, for a route that reads the body itself
    (after authentication: outbox/api/body.py). The schema is inlined."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    if defs:
        schema = _inline(schema, defs)
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": schema}}}}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


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


def error_responses(**conflicts: str) -> dict[int | str, dict[str, Any]]:
    """ERROR_RESPONSES with the route's own 409s, `code="what it means"`."""
    if not conflicts:
        return ERROR_RESPONSES
    listed = "; ".join(f"`{code}`: {text}" for code, text in conflicts.items())
    return {**ERROR_RESPONSES, 409: {"model": ErrorBody, "description": listed}}


class Event(BaseModel):
    """Something that happened (docs/events.md lists the types and payloads)."""

    id: int = Field(description="grows along the workspace's stream; resume after it")
    type: str = Field(description="e.g. message.read (outbox.states.EventType)")
    occurred_at: str
    channel_id: str | None
    chat_id: str | None
    message_id: str | None
    payload: dict[str, Any]


class EventList(BaseModel):
    events: list[Event] = Field(description="oldest first")
    next_after: int = Field(description="pass as `after` for what comes next")
    has_more: bool = Field(description="more events are ready now")
