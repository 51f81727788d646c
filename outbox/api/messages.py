"""/v1/messages: queue one or a batch, list (the dead letters too), read
one with its content, cancel, retry.

The same code path as the library: `enqueue_many` in a transaction that
commits before the response, with the caller's workspace as `workspace_id`
(another workspace's channel or message is simply not found).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from outbox import metrics
from outbox.admin import messages as service
from outbox.admin.apikeys import Principal
from outbox.admin.pages import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from outbox.api.auth import Reader, Sender
from outbox.api.body import parse_model, read_body
from outbox.api.context import AppContext, context
from outbox.api.schemas import (
    BatchQueued,
    MessageChanged,
    MessageContent,
    MessageDetail,
    MessageList,
    MessageQueued,
    SendBatch,
    SendMessage,
    error_responses,
    request_body,
)
from outbox.db import admin_queries as q
from outbox.enqueue import EnqueueOptions, enqueue_prepared
from outbox.errors import (
    ChannelDisabled,
    ChannelNotFound,
    InvalidInput,
    InvalidMessage,
    InvalidPhone,
)
from outbox.message_types import (
    MediaMessage,
    NewMessage,
    PreparedMessage,
    TextMessage,
    parse_channel_id,
    prepare,
)
from outbox.states import MessageStatus

router = APIRouter(prefix="/v1/messages", tags=["messages"])

QUEUED_RESPONSES: dict[int | str, dict[str, Any]] = {200: {"model": MessageQueued,
                 "description": "Idempotency key seen before: the existing message"}}
#: The 409s of a send: POST /v1/messages, the batch, POST /v1/chats/{id}/messages.
SEND_CONFLICTS = {"channel_disabled": "the channel is disabled (replace its token)",
                  "idempotency_conflict": "a concurrent send with the same key is not "
                                          "committed yet; try again"}


@router.post("", status_code=201, response_model=MessageQueued,
             openapi_extra=request_body(SendMessage),
             responses={**QUEUED_RESPONSES, **error_responses(body=True, **SEND_CONFLICTS)})
async def send_message(request: Request, principal: Sender) -> JSONResponse:
    """Queue a message. 201 when queued; 200 with the existing message when
    the idempotency key was used before on this channel."""
    body = parse_model(SendMessage, await read_body(request))
    ctx = context(request)

    def run(c: AppContext) -> MessageQueued:
        with http_fields():
            message = new_message(body, channel_id=body.channel_id, to=body.to)
        with c.transaction() as session:
            queued = enqueue(c, session, principal, [message])
        count_enqueued([message], queued)
        return queued[0]

    return queued_response(await run_in_threadpool(run, ctx))


@router.post("/batch", status_code=201, response_model=BatchQueued,
             openapi_extra=request_body(SendBatch),
             responses=error_responses(body=True, **SEND_CONFLICTS))
async def send_batch(request: Request, principal: Sender) -> BatchQueued:
    """Queue up to 1,000 messages, all or nothing: one bad message is a 4xx
    whose `field` names it (`messages.3.to`), and nothing is queued."""
    body = parse_model(SendBatch, await read_body(request, limit=_BATCH_BYTES))
    ctx = context(request)

    def run(c: AppContext) -> BatchQueued:
        messages = []
        for i, m in enumerate(body.messages):
            with http_fields(f"messages.{i}."):
                messages.append(new_message(m, channel_id=m.channel_id, to=m.to))
        with c.transaction() as session:
            queued = enqueue(c, session, principal, messages, index_fields=True)
        count_enqueued(messages, queued)
        return BatchQueued(messages=queued)

    return await run_in_threadpool(run, ctx)


@router.get("", response_model=MessageList, responses=error_responses())
async def list_messages(
    request: Request,
    principal: Reader,
    status: Annotated[MessageStatus | None, Query(description="failed: the dead "
                                                              "letters")] = None,
    chat_id: str | None = None,
    channel_id: str | None = None,
    since: Annotated[datetime | None, Query(description="created at or after (ISO 8601, "
                                                        "with a timezone)")] = None,
    idempotency_key: Annotated[str | None, Query(description="the key the message was "
                                                             "queued with",
                                                 max_length=500)] = None,
    limit: int = Query(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
    cursor: str | None = None,
) -> MessageList:
    """The workspace's messages, newest first."""
    def run(c: AppContext) -> MessageList:
        with c.transaction() as session:
            page = service.list_messages(
                session, workspace_id=principal.workspace_id, status=status, chat_id=chat_id,
                channel_id=channel_id, since=since, idempotency_key=idempotency_key,
                limit=limit, cursor=cursor)
        return MessageList.model_validate({"messages": page.messages,
                                           "next_cursor": page.next_cursor})

    return await run_in_threadpool(run, context(request))


@router.get("/{message_id}", response_model=MessageDetail, responses=error_responses())
async def get_message(message_id: str, request: Request, principal: Reader) -> MessageDetail:
    """A message: its content, status, attempts, last error, WhatsApp id and
    timestamps."""
    def run(c: AppContext) -> MessageDetail:
        with c.transaction() as session:
            r = service.message_detail(session, message_id, workspace_id=principal.workspace_id)
        deleted = r.deleted_at is not None
        return MessageDetail(
            message_id=r.id, channel_id=r.channel_id, chat_id=r.chat_id, to=r.wa_chat_id,
            direction=r.direction, type=r.type, status=r.status,
            wa_message_id=r.wa_message_id, error=r.error, idempotency_key=r.idempotency_key,
            attempts=r.attempts, max_attempts=r.max_attempts, outbox_status=r.outbox_status,
            last_error=r.last_error, next_attempt_at=r.next_attempt_at,
            created_at=r.created_at, updated_at=r.updated_at, sent_at=r.sent_at,
            delivered_at=r.delivered_at, read_at=r.read_at,
            body=None if deleted else r.body, payload={} if deleted else r.payload,
            reactions=r.reactions, edited_at=r.edited_at, deleted_at=r.deleted_at)

    return await run_in_threadpool(run, context(request))


@router.delete("/{message_id}", response_model=MessageChanged, responses=error_responses(
    already_sending="the dispatcher has claimed it", already_sent="WhatsApp has it",
    already_failed="it failed after WhatsApp took it",
    not_cancellable="an inbound message"))
async def cancel_message(message_id: str, request: Request,
                         principal: Sender) -> MessageChanged:
    """Cancel a message the dispatcher has not claimed yet, or a dead
    letter (failed before WhatsApp took it): it is never sent. Cancelling a
    cancelled message answers the same."""
    def run(c: AppContext) -> MessageChanged:
        with c.transaction() as session:
            service.cancel(session, message_id, workspace_id=principal.workspace_id)
        return MessageChanged.model_validate({"message_id": message_id, "status": "cancelled"})

    return await run_in_threadpool(run, context(request))


@router.post("/{message_id}/retry", response_model=MessageChanged,
             responses=error_responses(
                 not_failed="only a failed message is retried",
                 failed_after_sending="it failed after WhatsApp took it: send a new one"))
async def retry_message(message_id: str, request: Request,
                        principal: Sender) -> MessageChanged:
    """A failed message back to the queue with fresh attempts."""
    def run(c: AppContext) -> MessageChanged:
        with c.transaction() as session:
            service.retry(session, message_id, workspace_id=principal.workspace_id)
        return MessageChanged.model_validate({"message_id": message_id, "status": "pending"})

    return await run_in_threadpool(run, context(request))


# --- shared with /v1/chats/{id}/messages ----------------------------------------

# 1,000 messages of up to 4,096 characters (and their fields) in UTF-8.
_BATCH_BYTES = 16 * 1024 * 1024
# The library names the text `body`; over HTTP it is `text`.
_HTTP_FIELD = {"body": "text"}


def new_message(content: MessageContent, *, channel_id: str, to: str) -> NewMessage:
    """The request's content as the library's message (validated by `prepare`)."""
    media = content.media_fields()
    common: dict[str, Any] = {"idempotency_key": content.idempotency_key,
                              "priority": content.priority, "send_at": content.send_at}
    if content.text is not None:
        if media:
            raise InvalidMessage(
                f"give either text or media fields, not both ({', '.join(media)})",
                field=next(iter(media)))
        return TextMessage(channel_id, to, content.text, **common)
    if not media:
        raise InvalidMessage("text is required (or media_type and media for a media "
                             "message)", field="text")
    if content.media_type is None:
        raise InvalidMessage("media_type is required for a media message", field="media_type")
    if content.media is None:
        raise InvalidMessage("media is required for a media message", field="media")
    return MediaMessage(channel_id, to, content.media_type, content.media,
                        caption=content.caption, filename=content.filename,
                        mime_type=content.mime_type, **common)


def enqueue(ctx: AppContext, session: Session, principal: Principal,
            messages: Sequence[NewMessage], *, index_fields: bool = False) -> list[MessageQueued]:
    """Queue `messages` in `session` (all or nothing), within the workspace's
    queue cap. With `index_fields`, an error's field names the message
    (`messages.<i>.<field>`)."""
    settings = ctx.settings
    prepared: list[PreparedMessage] = []
    for i, m in enumerate(messages):
        with http_fields(f"messages.{i}." if index_fields else ""):
            prepared.append(prepare(m, default_region=settings.default_region,
                                    max_schedule_ahead=settings.max_schedule_ahead))
    ctx.queue_cap.admit(session, principal.workspace_id, adding=len(prepared))
    try:
        results = enqueue_prepared(session, prepared, EnqueueOptions(
            principal.workspace_id, settings.default_region, settings.max_attempts))
    except (ChannelNotFound, ChannelDisabled) as exc:
        if index_fields:  # the first message on the channel the error names
            first = next((i for i, p in enumerate(prepared) if str(p.channel_id) in exc.message),
                         None)
            exc.field = f"messages.{first}.channel_id" if first is not None else exc.field
        raise
    queued = []
    for r in results:
        status = MessageStatus.PENDING
        if r.duplicate:
            status = MessageStatus(session.execute(text(q.MESSAGE_STATUS),
                                                   {"message_id": r.message_id}).scalar_one())
        queued.append(MessageQueued(message_id=r.message_id, outbox_id=r.outbox_id,
                                    chat_id=r.chat_id, status=status, duplicate=r.duplicate))
    return queued


def queued_response(queued: MessageQueued) -> JSONResponse:
    return JSONResponse(queued.model_dump(mode="json"),
                        status_code=200 if queued.duplicate else 201)


@contextlib.contextmanager
def http_fields(prefix: str = "") -> Iterator[None]:
    """An error raised inside names its field as the request does: the
    library's names mapped (`body` is `text`), a phone error on `to`, and
    `prefix` before (`messages.3.`)."""
    try:
        yield
    except InvalidInput as exc:
        if exc.field is None and isinstance(exc, InvalidPhone):
            exc.field = "to"
        if exc.field is not None:
            exc.field = prefix + _HTTP_FIELD.get(exc.field, exc.field)
        raise


def count_enqueued(messages: Sequence[NewMessage], queued: Sequence[MessageQueued]) -> None:
    """After the commit: the new ones count (duplicates were counted before)."""
    for m, r in zip(messages, queued, strict=True):
        if not r.duplicate:
            metrics.count_enqueued(parse_channel_id(m.channel_id))
