"""The ASGI app: `create_app(settings)`; `outbox serve` runs it with uvicorn.

OpenAPI at /openapi.json; /docs and /redoc with OUTBOX_API_DOCS. Routes are thin: they read the
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
from outbox import tracing
from outbox.api import (
    apikeys,
    channels,
    chats,
    contacts,
    cron,
    endpoints,
    events,
    health,
    messages,
    sessions,
    stats,
    users,
    webhooks,
)
from outbox.api.context import AppContext
from outbox.api.cron import CronRuntime
from outbox.api.errors import install_error_handlers
from outbox.api.tracing import FASTAPI_TELEMETRY, TracingMiddleware
from outbox.console import install_console
from outbox.database import database_url as resolve_database_url
from outbox.database import make_engine
from outbox.events.hub import open_hub
from outbox.heartbeat import beat_forever
from outbox.maintenance.webhook_backlog import WebhookBacklog
from outbox.settings import Settings, get_settings

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None, *, database_url: str | None = None) -> FastAPI:
    settings = settings or get_settings()
    url = database_url or resolve_database_url(settings)
    ctx = AppContext(settings=settings, database_url=url,
                     engine=make_engine(url, pool_size=settings.db_pool_size,
                                        pooler=settings.db_pooler,
                                        pool_timeout=settings.db_pool_timeout_seconds))
    cron_runtime = CronRuntime(settings, url)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(_run_forever(WebhookBacklog(), ctx), name="status-backlog")]
        if settings.heartbeat_file is not None:  # liveness (outbox/heartbeat.py)
            tasks.append(asyncio.create_task(beat_forever(settings.heartbeat_file),
                                             name="heartbeat"))
        hub = app.state.event_hub = open_hub(url, settings)  # the event stream's reader
        await hub.start()
        try:
            yield
        finally:
            await hub.aclose()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await cron_runtime.aclose()
            ctx.engine.dispose()

    # /docs and /redoc load their scripts from a CDN: off unless asked for.
    docs = settings.api_docs
    app = FastAPI(title="whapi-outbox", version=outbox.__version__, lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url="/redoc" if docs else None,
                  description="Send WhatsApp messages through Whapi.cloud from a "
                              "transactional outbox; receive Whapi webhooks.",
                  **FASTAPI_TELEMETRY)
    app.state.outbox = ctx
    app.state.cron_runtime = cron_runtime
    install_error_handlers(app)
    if tracing.ENABLED:  # OpenTelemetry: a span per request, once a provider is set
        app.add_middleware(TracingMiddleware)
    for module in (messages, chats, contacts, channels, apikeys, users, stats, sessions,
                   webhooks, cron, health, events, endpoints):
        app.include_router(module.router)
    # The web console at / (its pages call the routes above, nothing else).
    install_console(app)
    return app


async def _run_forever(service: WebhookBacklog, ctx: AppContext) -> None:
    """The webhook backlog pass (outbox/maintenance/webhook_backlog.py),
    every few seconds, in a worker thread (webhooks also do it as they come)."""
    while True:
        await asyncio.sleep(service.interval_seconds)
        try:
            await run_in_threadpool(service.run_once, ctx.engine)
        except Exception as exc:
            log.warning("status_backlog_failed", error=type(exc).__name__)
