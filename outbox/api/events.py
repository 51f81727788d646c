"""/v1/events: the workspace's events, polled (`GET /v1/events?after=`) or
streamed (`GET /v1/events/stream`, Server-Sent Events). Read scope; an API
key or the console's session (cookie or bearer).

The stream sends `id: <id>\\nevent: <type>\\ndata: <event JSON>\\n\\n`
frames in id order and a comment when 15 s pass without one (outbox/events/hub.py
HEARTBEAT_SECONDS). Resume with the
`Last-Event-ID` header (browsers send it by themselves) or `?after=`:
exactly the events after it, none twice. Without either, it starts with
what happens next. Filters: `types=a,b` and `chat_id=`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from outbox.api.auth import Reader
from outbox.api.context import AppContext, context
from outbox.api.schemas import ERROR_RESPONSES, ErrorBody, EventList
from outbox.errors import EventsExpired
from outbox.events import hub as hub_module
from outbox.events.hub import DROPPED, HEARTBEAT, EventHub, Subscriber
from outbox.events.reader import (
    DEFAULT_EVENT_PAGE,
    MAX_EVENT_PAGE,
    EventFilter,
    EventPage,
    check_not_expired,
    frames,
    parse_cursor,
    parse_filter,
    read_events,
)

router = APIRouter(prefix="/v1/events", tags=["events"])

_RESPONSES: dict[int | str, dict[str, Any]] = {**ERROR_RESPONSES, 410: {
    "model": ErrorBody, "description": "`events_expired`: events after the cursor were "
                                       "pruned; the error's `oldest_id` is the oldest held"}}

CATCH_UP_PAGE = 500

_TYPES = Query(description="comma-separated event types (default: all)", max_length=1000)
_CHAT = Query(description="only this chat's events")


@router.get("", response_model=EventList, responses=_RESPONSES)
async def get_events(
    request: Request,
    principal: Reader,
    after: Annotated[int, Query(ge=0, lt=2**63, description="the last event id you hold; "
                                                            "0: from the oldest held")] = 0,
    limit: int = Query(DEFAULT_EVENT_PAGE, ge=1, le=MAX_EVENT_PAGE),
    types: Annotated[str | None, _TYPES] = None,
    chat_id: Annotated[str | None, _CHAT] = None,
) -> EventList:
    """Events after `after`, oldest first. Call again with `next_after`
    (the last id, or past events your filter left out). 410 events_expired
    when events after `after` were pruned (OUTBOX_EVENTS_RETENTION)."""
    wanted = parse_filter(types, chat_id)
    ctx = context(request)

    def read() -> EventList:
        with ctx.transaction() as session:
            page = read_events(session, workspace_id=principal.workspace_id, after=after,
                               limit=limit, wanted=wanted)
        return EventList.model_validate({"events": [e.as_dict() for e in page.events],
                                         "next_after": page.next_after,
                                         "has_more": page.has_more})

    return await run_in_threadpool(read)


@router.get("/stream", responses={**_RESPONSES, 200: {
    "content": {"text/event-stream": {}},
    "description": "Server-Sent Events: one frame per event, a comment as heartbeat"}})
async def stream_events(
    request: Request,
    principal: Reader,
    after: Annotated[str | None, Query(description="resume after this event id "
                                                   "(as Last-Event-ID)")] = None,
    types: Annotated[str | None, _TYPES] = None,
    chat_id: Annotated[str | None, _CHAT] = None,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    wanted = parse_filter(types, chat_id)
    # The header wins: it is what the browser sends when it reconnects on
    # its own, with the URL (and its `after`) it first opened.
    resume = parse_cursor(last_event_id, field="Last-Event-ID")
    if resume is None:
        resume = parse_cursor(after)
    ctx = context(request)
    hub: EventHub = request.app.state.event_hub
    workspace = principal.workspace_id
    if resume is not None:  # 410 now, as a JSON error, not mid-stream
        await run_in_threadpool(_check, ctx, workspace, resume)
    sub = await hub.subscribe(workspace)

    async def body() -> AsyncIterator[str | bytes]:
        try:
            yield ": connected\n\n"
            last = sub.cursor
            if resume is not None:
                # History up to the hub's cursor at least (outbox/events/hub.py).
                last = resume
                while True:
                    page = await run_in_threadpool(_page, ctx, workspace, last, wanted)
                    if page.events:
                        yield frames(page.events)
                    last = page.next_after
                    if not page.has_more and last >= sub.cursor:
                        break
                    if not page.has_more:  # the horizon is behind the hub's for a moment
                        await asyncio.sleep(0.02)
            async for chunk in _live(sub, last, wanted):
                yield chunk
        except EventsExpired:
            return  # pruned meanwhile: the reconnect gets the 410
        finally:
            hub.unsubscribe(sub)

    return StreamingResponse(body(), media_type="text/event-stream", headers={
        "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _live(sub: Subscriber, last: int, wanted: EventFilter) -> AsyncIterator[bytes]:
    """The hub's batches after `last`, filtered, and its heartbeats. The hot
    path of a busy stream: one batch to a thousand clients."""
    everything = wanted == EventFilter()
    quiet_since: float | None = None  # since when batches were all filtered out
    while True:
        batch = await sub.queue.get()
        if batch is HEARTBEAT:
            quiet_since = None
            yield b": heartbeat\n\n"
            continue
        if batch is DROPPED:
            return  # too far behind, or the server stops: the client reconnects
        if everything and batch[0].id > last:
            out = [e.frame for e in batch]
        else:
            out = [e.frame for e in batch if e.id > last and wanted.matches(e.type, e.chat_id)]
        last = max(last, batch[-1].id)
        if out:
            yield out[0] if len(out) == 1 else b"".join(out)
            quiet_since = None
        else:
            # All filtered out: the hub counts the client busy, but nothing
            # went down the wire. Say something now and then all the same.
            now = time.monotonic()
            quiet_since = quiet_since or now
            if now - quiet_since >= hub_module.HEARTBEAT_SECONDS:
                quiet_since = now
                yield b": heartbeat\n\n"


def _check(ctx: AppContext, workspace: str, after: int) -> None:
    with ctx.transaction() as session:
        check_not_expired(session, workspace_id=workspace, after=after)


def _page(ctx: AppContext, workspace: str, after: int, wanted: EventFilter) -> EventPage:
    with ctx.transaction() as session:
        return read_events(session, workspace_id=workspace, after=after, limit=CATCH_UP_PAGE,
                           wanted=wanted)

