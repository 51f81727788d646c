"""/v1/chats: the inbox. The chat list (search, filters, cursor), one chat,
its thread, sending into it, assigning, reading, archiving."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from outbox.admin import chats as service
from outbox.admin.apikeys import Principal
from outbox.admin.pages import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from outbox.api.auth import ChatAgent, Reader, Sender
from outbox.api.body import parse_model, read_body
from outbox.api.context import AppContext, context
from outbox.api.messages import (
    QUEUED_RESPONSES,
    SEND_CONFLICTS,
    count_enqueued,
    enqueue,
    http_fields,
    new_message,
    queued_response,
)
from outbox.api.schemas import (
    AssignChat,
    ChatDetail,
    ChatList,
    ChatRead,
    ChatStatusChanged,
    Contact,
    MessageContent,
    MessageQueued,
    Thread,
    error_responses,
    request_body,
)
from outbox.errors import InvalidInput

router = APIRouter(prefix="/v1/chats", tags=["chats"])

_ASSIGNED_TO = ("a user id, `me` (the calling user) or `none` (chats nobody is "
                "assigned)")


@router.get("", response_model=ChatList, responses=error_responses())
async def get_chats(
    request: Request,
    principal: Reader,
    q: Annotated[str | None, Query(description="the start of the contact's name (any case) "
                                               "or number", max_length=100)] = None,
    channel_id: str | None = None,
    unread: bool = False,
    archived: Annotated[bool, Query(description="archived chats instead of active")] = False,
    include_archived: Annotated[bool, Query(description="active and archived")] = False,
    is_group: bool | None = None,
    assigned_to: Annotated[str | None, Query(description=_ASSIGNED_TO)] = None,
    limit: int = Query(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
    cursor: str | None = None,
) -> ChatList:
    """The workspace's chats, newest message first, a page at a time. A
    search matching many contacts may return a short page, even an empty
    one, with a `next_cursor`: follow it until it is null."""
    user, unassigned = _assignee_filter(principal, assigned_to)

    def run(c: AppContext) -> ChatList:
        with c.transaction() as session:
            page = service.list_chats(
                session, workspace_id=principal.workspace_id, channel_id=channel_id,
                unread_only=unread, archived=archived, include_archived=include_archived,
                is_group=is_group, assigned_to=user, unassigned=unassigned, q=q,
                limit=limit, cursor=cursor)
        return ChatList.model_validate({"chats": [ch.as_dict() for ch in page.chats],
                                        "next_cursor": page.next_cursor})

    return await run_in_threadpool(run, context(request))


@router.get("/{chat_id}", response_model=ChatDetail, responses=error_responses())
async def get_chat(chat_id: str, request: Request, principal: Reader) -> ChatDetail:
    """One chat: its contact, unread count, status, assignee, latest message."""
    return await run_in_threadpool(_detail, context(request), principal, chat_id)


@router.patch("/{chat_id}", response_model=ChatDetail, openapi_extra=request_body(AssignChat),
              responses=error_responses(body=True))
async def assign_chat(chat_id: str, request: Request, principal: ChatAgent) -> ChatDetail:
    """Assign the chat (`{"assigned_to": "<user id>" | "me"}`: an active user
    of the workspace, 422 for anyone else) or unassign it
    (`{"assigned_to": null}`)."""
    body = parse_model(AssignChat, await read_body(request))
    user = None if body.assigned_to is None else _user(principal, body.assigned_to)

    def run(c: AppContext) -> ChatDetail:
        with c.transaction() as session:
            service.assign_chat(session, chat_id, user, workspace_id=principal.workspace_id)
        return _detail(c, principal, chat_id)

    return await run_in_threadpool(run, context(request))


@router.get("/{chat_id}/messages", response_model=Thread, responses=error_responses())
async def get_thread(
    chat_id: str,
    request: Request,
    principal: Reader,
    before: Annotated[str | None, Query(description="a `before_cursor`: older messages")] = None,
    after: Annotated[str | None, Query(description="an `after_cursor`: newer messages")] = None,
    limit: int = Query(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
) -> Thread:
    """The chat's messages, newest first: the latest, or older (`before`) or
    newer (`after`) than a cursor of an earlier page."""
    def run(c: AppContext) -> Thread:
        with c.transaction() as session:
            page = service.thread(session, chat_id, workspace_id=principal.workspace_id,
                                  before=before, after=after, limit=limit)
        return Thread.model_validate({"messages": page.messages,
                                      "before_cursor": page.before_cursor,
                                      "after_cursor": page.after_cursor})

    return await run_in_threadpool(run, context(request))


@router.post("/{chat_id}/messages", status_code=201, response_model=MessageQueued,
             openapi_extra=request_body(MessageContent),
             responses={**QUEUED_RESPONSES, **error_responses(body=True, **SEND_CONFLICTS)})
async def send_to_chat(chat_id: str, request: Request, principal: Sender) -> JSONResponse:
    """Send into the chat (its channel, its WhatsApp id), as POST
    /v1/messages does; replying reads the chat (unread to 0, a read
    receipt queued ahead of the reply)."""
    body = parse_model(MessageContent, await read_body(request))

    def run(c: AppContext) -> MessageQueued:
        ws = principal.workspace_id
        with c.transaction() as session:
            channel, wa_chat_id = service.chat_address(session, chat_id, workspace_id=ws)
            with http_fields():
                message = new_message(body, channel_id=str(channel), to=wa_chat_id)
            service.mark_chat_read(session, chat_id, workspace_id=ws,
                                   max_attempts=c.settings.max_attempts)
            queued = enqueue(c, session, principal, [message])
        count_enqueued([message], queued)
        return queued[0]

    return queued_response(await run_in_threadpool(run, context(request)))


@router.post("/{chat_id}/read", response_model=ChatRead, responses=error_responses())
async def read_chat(chat_id: str, request: Request, principal: ChatAgent) -> ChatRead:
    """Unread to 0, the inbound messages read, and a read receipt for the
    latest one queued to WhatsApp (when it was unread)."""
    def run(c: AppContext) -> ChatRead:
        with c.transaction() as session:
            n = service.mark_chat_read(session, chat_id, workspace_id=principal.workspace_id,
                                       max_attempts=c.settings.max_attempts)
        return ChatRead.model_validate({"chat_id": chat_id, "messages_read": n})

    return await run_in_threadpool(run, context(request))


@router.post("/{chat_id}/archive", response_model=ChatStatusChanged,
             responses=error_responses())
async def archive_chat(chat_id: str, request: Request,
                       principal: ChatAgent) -> ChatStatusChanged:
    """Out of the active list until unarchived (or a new inbound message)."""
    return await run_in_threadpool(_set_status, context(request), principal, chat_id, True)


@router.post("/{chat_id}/unarchive", response_model=ChatStatusChanged,
             responses=error_responses())
async def unarchive_chat(chat_id: str, request: Request,
                         principal: ChatAgent) -> ChatStatusChanged:
    """Back in the active list."""
    return await run_in_threadpool(_set_status, context(request), principal, chat_id, False)


def _set_status(c: AppContext, principal: Principal, chat_id: str,
                archive: bool) -> ChatStatusChanged:
    change = service.archive_chat if archive else service.unarchive_chat
    with c.transaction() as session:
        status = change(session, chat_id, workspace_id=principal.workspace_id)
    return ChatStatusChanged.model_validate({"chat_id": chat_id, "status": status})


def _detail(c: AppContext, principal: Principal, chat_id: str) -> ChatDetail:
    with c.transaction() as session:
        d = service.get_chat(session, chat_id, workspace_id=principal.workspace_id)
    data: dict[str, Any] = {**d.chat.as_dict(), "contact": Contact.model_validate(d.contact),
                            "last_message": d.last_message}
    return ChatDetail.model_validate(data)


def _assignee_filter(principal: Principal, value: str | None) -> tuple[uuid.UUID | None, bool]:
    """`assigned_to` as (a user, or unassigned only)."""
    if value is None:
        return None, False
    if value.strip().lower() == "none":
        return None, True
    return _user(principal, value), False


def _user(principal: Principal, value: str) -> uuid.UUID:
    """A user id, or `me`: the calling user (a session's; an API key is no one)."""
    if value.strip().lower() == "me":
        me = getattr(principal, "user_id", None)
        if not isinstance(me, uuid.UUID):
            raise InvalidInput("assigned_to=me needs a signed-in user; an API key is not one",
                               field="assigned_to")
        return me
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise InvalidInput("assigned_to must be a user id, me or none",
                           field="assigned_to") from None
