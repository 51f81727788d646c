"""Request and response bodies of the HTTP API (also its OpenAPI schema)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from outbox.states import (
    ChannelStatus,
    ChatStatus,
    Direction,
    MessageStatus,
    OutboxStatus,
    PauseCause,
    Role,
    Scope,
)


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
    direction: Direction
    type: str
    status: MessageStatus
    body: str | None
    wa_message_id: str | None
    error: str | None
    outbox_status: OutboxStatus | None
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
    status: MessageStatus


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
    status: ChatStatus
    assigned_to: uuid.UUID | None = Field(description="the user the chat is assigned to")
    created_at: datetime


class ChatList(BaseModel):
    chats: list[ChatSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null: "
                                                "the last page")


class Contact(BaseModel):
    """outbox.admin.contacts.ContactInfo as the API shows it, read off its
    attributes (tests/test_api.py checks the two have the same fields)."""

    model_config = ConfigDict(from_attributes=True)

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
    direction: Direction
    type: str
    body: str | None
    status: MessageStatus
    created_at: datetime
    sent_at: datetime | None
    deleted: bool


class ChatDetail(ChatSummary):
    contact: Contact
    last_message: LastMessage | None


class ThreadMessage(BaseModel):
    id: uuid.UUID
    direction: Direction
    type: str
    body: str | None = Field(description="null once deleted for everyone")
    payload: dict[str, Any]
    status: MessageStatus
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


class ChatStatusChanged(BaseModel):
    chat_id: uuid.UUID
    status: ChatStatus


class ChatRead(BaseModel):
    chat_id: uuid.UUID
    messages_read: int = Field(description="inbound messages marked read")


class ContactChat(BaseModel):
    id: uuid.UUID
    channel_id: uuid.UUID
    wa_chat_id: str
    status: ChatStatus
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


# --- administration: channels, users, API keys, sessions, stats -------------


class Channel(BaseModel):
    """A channel; its Whapi token is never shown."""

    id: uuid.UUID
    workspace_id: str
    name: str
    phone_number: str = Field(description="the channel's own number, E.164")
    base_url: str | None = Field(description="its Whapi base URL (null: the default)")
    status: ChannelStatus
    paused_until: datetime | None = Field(description="a pause's end (null: until resumed)")
    pause_reason: str | None


class ChannelQueue(Channel):
    pause_cause: PauseCause | None = Field(description="why it is paused, as a code")
    queued: int = Field(description="rows waiting to be sent")
    oldest_due_at: datetime | None = Field(description="the longest-waiting row that could go "
                                                       "now")


class ChannelList(BaseModel):
    channels: list[ChannelQueue]


# The PATCH field and the answer's say the same (docs/pacing.md, "warm-up").
WARMUP_DESCRIPTION = (
    'START,xFACTOR,CEILING, e.g. "50,x1.5,1000": a new number\'s daily cap, START the first '
    "day, then xFACTOR a day up to CEILING (with per_day too, the lower wins); "
    "new_chats_per_day grows in step: x today's cap / CEILING, rounded up")


class LimitsUsage(BaseModel):
    """The channel's budget now, as the next claim counts it."""

    day: date = Field(description="today in the channel's time zone")
    day_used: int
    day_cap: int | None = Field(description="today's cap: per_day and the warm-up's")
    new_chats_used: int
    new_chats_cap: int | None = Field(
        description="today's new-chat cap: new_chats_per_day, grown by the warm-up")
    new_chats_left: int | None
    rows_left: int | None = Field(description="rows a claim may take now (null: no row limit)")
    tokens: float | None = Field(description="the per-second bucket now")
    minute_used: int


class ChannelLimits(BaseModel):
    """The channel's send limits (null: none; docs/pacing.md)."""

    channel_id: uuid.UUID
    per_second: float | None
    burst: int | None
    per_minute: int | None
    per_day: int | None
    new_chats_per_day: int | None
    chat_gap_seconds: float | None
    typing_time: int | None
    timezone: str
    warmup: str | None = Field(description=WARMUP_DESCRIPTION)
    warmup_from: date | None
    usage: LimitsUsage | None = Field(description="null: no limits were ever set")


class ChannelWithLimits(Channel):
    limits: ChannelLimits


class WebhookEvent(BaseModel):
    type: str
    method: str


class WhapiWebhook(BaseModel):
    url: str
    mode: Literal["body", "path", "method"]
    headers: dict[str, str]
    events: list[WebhookEvent]


class WhapiSettings(BaseModel):
    """The body of Whapi's `PATCH /settings`."""

    webhooks: list[WhapiWebhook]


class WebhookInfo(BaseModel):
    channel_id: uuid.UUID
    url: str = Field(description="where Whapi posts this channel's webhooks")
    mode: Literal["body", "path", "method"]
    header: str = Field(description="the header that carries the secret")
    secret: str
    events: list[WebhookEvent] = Field(description="the events to subscribe")
    whapi_settings: WhapiSettings
    public_url_set: bool = Field(description="false: the URL is the local listen address, "
                                             "which Whapi can't reach (set OUTBOX_PUBLIC_URL)")


class NewWebhookSecret(WebhookInfo):
    """webhook-info with the channel's new secret."""

    previous_secret_valid_until: datetime | None = Field(
        description="until when the old secret still works (null: it no longer does)")


class User(BaseModel):
    id: uuid.UUID
    workspace_id: str
    email: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None


class UserList(BaseModel):
    users: list[User]


class ApiKey(BaseModel):
    """A key as listed: never the key itself (only its hash is stored)."""

    id: uuid.UUID
    workspace_id: str
    name: str | None
    prefix: str = Field(description="the key's first characters, to tell keys apart")
    scopes: list[Scope]
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyList(BaseModel):
    api_keys: list[ApiKey]


class ApiKeyCreated(BaseModel):
    id: uuid.UUID
    workspace_id: str
    name: str | None
    prefix: str
    scopes: list[Scope]
    key: str = Field(description="shown in this answer only: store it now")


class SessionUser(BaseModel):
    id: uuid.UUID
    workspace_id: str
    email: str
    role: Role


class SessionCreated(BaseModel):
    token: str = Field(description="`Authorization: Bearer <token>`; also set as the cookie")
    expires_at: datetime
    csrf_token: str = Field(description="X-CSRF-Token of a change authenticated by the cookie")
    user: SessionUser
    scopes: list[Scope]


class CurrentSession(BaseModel):
    workspace_id: str
    user_id: uuid.UUID
    user: SessionUser
    scopes: list[Scope]
    csrf_token: str


class ThroughputCounts(BaseModel):
    sent: int
    retried: int = Field(description="an attempt failed and another is due")
    failed: int = Field(description="failed for good")


class ThroughputMinute(ThroughputCounts):
    minute: datetime
    queued: int = Field(description="rows waiting or being sent at the minute's end")


class CronPass(BaseModel):
    """What one cron pass did (POST /v1/cron/dispatch)."""

    claimed: int = Field(description="rows claimed")
    sent: int
    retried: int = Field(description="an attempt failed and another is due")
    failed: int = Field(description="failed for good (dead letters)")
    released: int = Field(description="back to the queue without spending an attempt "
                                      "(e.g. its channel paused)")
    ambiguous: int = Field(description="the request may have reached WhatsApp (a timeout)")
    stale: int = Field(description="outcomes for rows whose lease had passed: not recorded")
    paused_channels: list[str] = Field(description="channels paused during the pass")
    seconds: float = Field(description="how long the drain ran")


class Throughput(BaseModel):
    since: datetime = Field(description="the first minute of the window")
    series: list[ThroughputMinute] = Field(description="one per minute, oldest first, zeros "
                                                       "included")
    channels: dict[str, ThroughputCounts] = Field(description="per channel id: the totals")


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


class ErrorItem(BaseModel):
    field: str | None = Field(description="the field at fault, e.g. `messages.3.to`")
    message: str


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable; docs/http-api.md lists every code")
    message: str = Field(description="one line a person can act on")
    field: str | None = Field(default=None, description="the request field at fault, e.g. "
                                                        "`to` or `messages.3.to`")
    details: list[ErrorItem] | None = Field(
        default=None, description="a validation error (422): every problem found, not only "
                                  "the first")
    oldest_id: int | None = Field(
        default=None, description="`events_expired` (410) only: the oldest event still held")


class ErrorBody(BaseModel):
    error: ErrorDetail


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before trying again",
                                "schema": {"type": "integer"}}}
_ERRORS: dict[int, tuple[str, dict[str, Any]]] = {
    400: ("The body is not JSON (`malformed_json`)", {}),
    401: ("Missing or invalid credentials (`unauthorized`)", {}),
    403: ("The credentials lack a scope the route needs (`insufficient_scope`), or a change "
          "authenticated by the session cookie lacks its CSRF token (`csrf_failed`)", {}),
    404: ("Not found, or another workspace's (`*_not_found`)", {}),
    409: ("Conflicts with the current state; `error.code` says how", {}),
    413: ("The body is too large (`payload_too_large`)", {}),
    422: ("An invalid field, named by `error.field` (`invalid_input`, `invalid_phone`, ...)",
          {}),
    429: ("Over a rate or a cap (`rate_limited`, `queue_full`)", {"headers": _RETRY_AFTER}),
    503: ("The database is unreachable (`database_unavailable`) or every connection is busy "
          "(`database_busy`, with Retry-After); try again", {}),
}


def _error(status: int, description: str | None = None) -> dict[str, Any]:
    text, extra = _ERRORS[status]
    return {"model": ErrorBody, "description": description or text, **extra}


#: Every error any route may answer (409 without its codes): for routes that
#: don't list their own with `error_responses`.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {code: _error(code) for code in _ERRORS}


def error_responses(*, body: bool = False, **conflicts: str) -> dict[int | str, dict[str, Any]]:
    """The errors a route answers: every authenticated route's (401, 403, 404,
    422, 429, 503); 400 and 413 when it reads a JSON `body`; a 409 when it
    has `conflicts` (`code="what it means"`), which its description lists."""
    out: dict[int | str, dict[str, Any]] = {
        code: _error(code) for code in (401, 403, 404, 422, 429, 503)}
    if body:
        out |= {400: _error(400), 413: _error(413)}
    if conflicts:
        listed = "; ".join(f"`{code}`: {text}" for code, text in conflicts.items())
        out[409] = _error(409, f"Conflicts with the current state: {listed}")
    return dict(sorted(out.items(), key=lambda item: int(item[0])))


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
