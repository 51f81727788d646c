"""POST /v1/cron/dispatch: one `dispatch --once` pass, for schedulers that
can only call a URL. Guarded by OUTBOX_CRON_SECRET (disabled when unset)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from outbox import metrics
from outbox.api.auth import require_cron_secret
from outbox.api.context import context
from outbox.api.schemas import ERROR_RESPONSES
from outbox.dispatch.runtime import open_runtime

DEFAULT_BUDGET_SECONDS = 25.0  # fits the 30 s request limit of most schedulers
MAX_BUDGET_SECONDS = 300.0

router = APIRouter(prefix="/v1/cron", tags=["cron"])


@router.post("/dispatch", dependencies=[Depends(require_cron_secret)], responses=ERROR_RESPONSES)
async def cron_dispatch(
    request: Request,
    budget: float = Query(DEFAULT_BUDGET_SECONDS, gt=0, le=MAX_BUDGET_SECONDS,
                          description="stop claiming after this many seconds"),
) -> dict[str, Any]:
    """Send what is due (within `budget` seconds) and return the summary."""
    ctx = context(request)
    async with open_runtime(ctx.settings, url=ctx.database_url) as runtime:
        summary = await metrics.instrumented_dispatcher(runtime).drain(max_seconds=budget)
    return summary.as_dict()

