"""The ASGI app: `create_app(settings)`; `outbox serve` runs it with uvicorn.

OpenAPI at /openapi.json, docs at /docs. Routes are thin: they read the
request, call the same service functions as the CLI and the library
(enqueue, webhooks, chats), and map `OutboxError`s to JSON errors.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

import outbox
from outbox.api import chats, cron, health, messages, webhooks
from outbox.api.context import AppContext
from outbox.api.errors import install_error_handlers
from outbox.database import database_url as resolve_database_url
from outbox.database import make_engine
from outbox.settings import Settings, get_settings
from outbox.webhooks.apply import apply_pending, apply_status_backlog

BACKLOG_INTERVAL_SECONDS = 5.0  # how often early statuses and actions are matched again

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None, *, database_url: str | None = None) -> FastAPI:
    settings = settings or get_settings()
    url = database_url or resolve_database_url(settings)
    ctx = AppContext(settings=settings, database_url=url,
                     engine=make_engine(url, pool_size=settings.db_pool_size,
                                        pooler=settings.db_pooler))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backlog = asyncio.create_task(_apply_backlog_forever(ctx), name="status-backlog")
        try:
            yield
        finally:
            backlog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await backlog
            ctx.engine.dispose()

    app = FastAPI(title="whapi-outbox", version=outbox.__version__, lifespan=lifespan,
                  description="Send WhatsApp messages through Whapi.cloud from a "
                              "transactional outbox; receive Whapi webhooks.")
    app.state.outbox = ctx
    install_error_handlers(app)
    for module in (messages, chats, webhooks, cron, health):
        app.include_router(module.router)
    return app


async def _apply_backlog_forever(ctx: AppContext) -> None:
    """Statuses that came before their message's WhatsApp id was recorded,
    and reactions, edits, deletes and echoes before their message: try them
    again every few seconds (webhooks also do it as they come)."""
    def once() -> None:
        with ctx.transaction() as session:
            result = apply_status_backlog(session)
            pending = apply_pending(session)
        if result.applied:
            log.info("status_backlog_applied", messages=result.applied, rows=result.taken)
        if pending.applied or pending.echoes_matched:
            log.info("webhook_pending_applied", actions=pending.applied,
                     echoes=pending.echoes_matched)

    while True:
        await asyncio.sleep(BACKLOG_INTERVAL_SECONDS)
        try:
            await run_in_threadpool(once)
        except Exception as exc:
            log.warning("status_backlog_failed", error=type(exc).__name__)
