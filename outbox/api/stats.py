"""/v1/stats: numbers over time for operators (admin scope): the last
minutes' throughput per minute and per channel (outbox/admin/throughput.py)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from outbox.admin.throughput import MAX_MINUTES, throughput
from outbox.api.auth import Admin
from outbox.api.context import context
from outbox.api.schemas import Throughput, error_responses

router = APIRouter(prefix="/v1/stats", tags=["stats"])


@router.get("/throughput", response_model=Throughput, responses=error_responses())
async def get_throughput(request: Request, principal: Admin,
                         minutes: int = Query(60, ge=1, le=MAX_MINUTES)) -> Throughput:
    """Per minute of the last `minutes` (oldest first, zeros included): messages
    `sent`, `retried` (an attempt failed, another is due) and `failed` for
    good, and `queued` (the queue's depth at the minute's end); and each
    channel's totals over the window."""
    ctx = context(request)

    def run() -> Throughput:
        with ctx.transaction() as session:
            return Throughput.model_validate(throughput(
                session, workspace_id=principal.workspace_id, minutes=minutes).as_dict())

    return await run_in_threadpool(run)
