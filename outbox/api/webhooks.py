"""POST /webhooks/whapi/{channel_id}: what Whapi tells us.

Checks, in this order: the channel exists (404), the secret header matches
(401), the body is JSON (400). Then the webhook is applied in one
transaction and answered with 200. A database failure is a 5xx, so Whapi
retries; applying a webhook twice changes nothing, so retries are safe.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from outbox import metrics
from outbox.api.body import read_body
from outbox.api.context import AppContext, context
from outbox.api.schemas import ERROR_RESPONSES
from outbox.webhooks import (
    SECRET_HEADER,
    WebhookResult,
    apply_status_backlog,
    check_webhook_secret,
    find_webhook_channel,
    parse_body,
    process_webhook,
)

WEBHOOK_MAX_BODY_BYTES = 5 * 1024 * 1024

log = structlog.get_logger(__name__)
router = APIRouter(tags=["webhooks"])


@router.post("/webhooks/whapi/{channel_id}", responses=ERROR_RESPONSES, openapi_extra={
    "parameters": [{"name": SECRET_HEADER, "in": "header", "required": True,
                    "schema": {"type": "string"}}]})
async def whapi_webhook(channel_id: str, request: Request) -> dict[str, Any]:
    """Statuses (sent, delivered, read, ...) and inbound messages from Whapi."""
    ctx = context(request)
    secret = request.headers.get(SECRET_HEADER)
    channel = await run_in_threadpool(_authenticate, ctx, channel_id, secret)
    payload = parse_body(await read_body(request, limit=WEBHOOK_MAX_BODY_BYTES))
    result = await run_in_threadpool(_apply, ctx, channel, payload)
    metrics.count_webhook(result)
    return {"ok": True, **result.as_dict()}


def _authenticate(ctx: AppContext, channel_id: str, secret: str | None) -> Any:
    with ctx.transaction() as session:
        channel = find_webhook_channel(session, channel_id)
    check_webhook_secret(channel, secret)
    return channel


def _apply(ctx: AppContext, channel: Any, payload: Any) -> WebhookResult:
    with ctx.transaction() as session:
        result = process_webhook(session, channel, payload)
    if result.statuses_backlogged or result.statuses_applied or result.statuses_unchanged:
        # Earlier statuses of this channel may have found their message by now.
        try:
            with ctx.transaction() as session:
                apply_status_backlog(session, channel_id=channel.id)
        except Exception as exc:  # the webhook itself is stored; the timer retries this
            log.warning("status_backlog_apply_failed", error=type(exc).__name__)
    return result
