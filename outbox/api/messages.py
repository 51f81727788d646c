"""POST /v1/messages (enqueue) and GET /v1/messages/{id}.

The same code path as the library: `enqueue_text` / `enqueue_media` in a
transaction that commits before the response, with the caller's workspace
as `workspace_id` (another workspace's channel is simply not found).
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from outbox import metrics
from outbox.admin.apikeys import Principal
from outbox.api.auth import Reader, Sender
from outbox.api.body import parse_model, read_body
from outbox.api.context import AppContext, context
from outbox.api.schemas import ERROR_RESPONSES, MessageDetail, MessageQueued, SendMessage
from outbox.db import admin_queries as q
from outbox.enqueue import EnqueueResult, enqueue_media, enqueue_text
from outbox.errors import InvalidInput, InvalidMessage, InvalidPhone, MessageNotFound
from outbox.message_types import parse_channel_id
from outbox.states import MessageStatus

router = APIRouter(prefix="/v1/messages", tags=["messages"])

_SEND_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": SendMessage.model_json_schema()}}}}


@router.post("", status_code=201, response_model=MessageQueued, openapi_extra=_SEND_BODY,
             responses={200: {"model": MessageQueued,
                              "description": "Idempotency key seen before: the existing message"},
                        **ERROR_RESPONSES})
async def send_message(request: Request,
                       principal: Sender) -> JSONResponse:
    """Queue a message. 201 when queued; 200 with the existing message when
    the idempotency key was used before on this channel."""
    body = parse_model(SendMessage, await read_body(request))
    ctx = context(request)
    queued = await run_in_threadpool(_enqueue, ctx, principal, body)
    if not queued.duplicate:
        metrics.count_enqueued(parse_channel_id(body.channel_id))
    return JSONResponse(queued.model_dump(mode="json"), status_code=200 if queued.duplicate
                        else 201)


@router.get("/{message_id}", response_model=MessageDetail, responses=ERROR_RESPONSES)
async def get_message(message_id: str, request: Request,
                      principal: Reader) -> MessageDetail:
    """A message's status, attempts, last error, WhatsApp id and timestamps."""
    ctx = context(request)
    return await run_in_threadpool(_detail, ctx, principal.workspace_id, message_id)


# The library names the text `body`; over HTTP it is `text`.
_HTTP_FIELD = {"body": "text"}


def _enqueue(ctx: AppContext, principal: Principal, body: SendMessage) -> MessageQueued:
    try:
        return _enqueue_unchecked(ctx, principal, body)
    except InvalidInput as exc:
        if exc.field is None and isinstance(exc, InvalidPhone):
            exc.field = "to"
        exc.field = _HTTP_FIELD.get(exc.field or "", exc.field)
        raise


def _enqueue_unchecked(ctx: AppContext, principal: Principal,
                       body: SendMessage) -> MessageQueued:
    settings = ctx.settings
    common: dict[str, Any] = {
        "channel_id": body.channel_id, "to": body.to, "idempotency_key": body.idempotency_key,
        "priority": body.priority, "send_at": body.send_at,
        "workspace_id": principal.workspace_id, "default_region": settings.default_region,
        "max_attempts": settings.max_attempts,
    }
    media = body.media_fields()
    with ctx.transaction() as session:
        ctx.queue_cap.admit(session, principal.workspace_id, adding=1)
        result: EnqueueResult
        if body.text is not None:
            if media:
                raise InvalidMessage(
                    f"give either text or media fields, not both ({', '.join(media)})",
                    field=next(iter(media)))
            result = enqueue_text(session, body=body.text, **common)
        elif media:
            if body.media_type is None:
                raise InvalidMessage("media_type is required for a media message",
                                     field="media_type")
            if body.media is None:
                raise InvalidMessage("media is required for a media message", field="media")
            result = enqueue_media(session, media_type=body.media_type, media=body.media,
                                   caption=body.caption, filename=body.filename,
                                   mime_type=body.mime_type, **common)
        else:
            raise InvalidMessage("text is required (or media_type and media for a media "
                                 "message)", field="text")
        status = MessageStatus.PENDING
        if result.duplicate:
            status = MessageStatus(session.execute(text(q.MESSAGE_STATUS),
                                                   {"message_id": result.message_id}).scalar_one())
    return MessageQueued(message_id=result.message_id, outbox_id=result.outbox_id,
                         chat_id=result.chat_id, status=status, duplicate=result.duplicate)


def _detail(ctx: AppContext, workspace_id: str, message_id: str) -> MessageDetail:
    try:
        mid = uuid.UUID(message_id)
    except ValueError:
        raise MessageNotFound(f"message {message_id[:40]!r} does not exist",
                              field="message_id") from None
    with ctx.transaction() as session:
        r = session.execute(text(q.MESSAGE_DETAIL),
                            {"message_id": mid, "workspace_id": workspace_id}).one_or_none()
    if r is None:
        raise MessageNotFound(f"message {mid} does not exist", field="message_id")
    return MessageDetail(
        message_id=r.id, channel_id=r.channel_id, chat_id=r.chat_id, to=r.wa_chat_id,
        direction=r.direction, type=r.type, status=r.status, wa_message_id=r.wa_message_id,
        error=r.error, idempotency_key=r.idempotency_key, attempts=r.attempts,
        max_attempts=r.max_attempts, outbox_status=r.outbox_status, last_error=r.last_error,
        next_attempt_at=r.next_attempt_at, created_at=r.created_at, updated_at=r.updated_at,
        sent_at=r.sent_at, delivered_at=r.delivered_at, read_at=r.read_at,
    )
