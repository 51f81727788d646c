"""GET /v1/chats: the caller's conversations, newest first, with a cursor."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from outbox.admin.chats import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, list_chats
from outbox.api.auth import Reader
from outbox.api.context import AppContext, context
from outbox.api.schemas import ERROR_RESPONSES

router = APIRouter(prefix="/v1/chats", tags=["chats"])


@router.get("", responses=ERROR_RESPONSES)
async def get_chats(
    request: Request,
    principal: Reader,
    channel_id: str | None = None,
    unread: bool = False,
    archived: bool = False,
    limit: int = Query(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE),
    cursor: str | None = None,
) -> dict[str, Any]:
    """`{"chats": [...], "next_cursor": "..." | null}`."""
    ctx = context(request)

    def run(c: AppContext) -> dict[str, Any]:
        with c.transaction() as session:
            page = list_chats(session, workspace_id=principal.workspace_id,
                              channel_id=channel_id, unread_only=unread, archived=archived,
                              limit=limit, cursor=cursor)
        return {"chats": [ch.as_dict() for ch in page.chats], "next_cursor": page.next_cursor}

    return await run_in_threadpool(run, ctx)
