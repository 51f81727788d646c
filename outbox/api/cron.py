"""POST /v1/cron/dispatch: one `dispatch --once` pass, for schedulers that
can only call a URL. Guarded by OUTBOX_CRON_SECRET (disabled when unset).

A pass is the same as `dispatch --once`: upkeep first (expired leases
rescued, expired pauses lifted: with cron as the only dispatcher nothing
else does it), then a drain. One pass at a time across every API process:
a call that overlaps one answers 409 `cron_busy`. The lock is a
transaction-scoped advisory lock, held by a transaction that stays open
(idle, no snapshot, no xid) for the whole call on a connection of its own:
unlike a session lock it works behind a transaction-mode pooler, which
keeps a client's transaction on one server connection, and it is released
by PostgreSQL if the process dies.

The dispatcher's parts (an async engine, the Whapi client, the decrypted
tokens) are built on the first call and kept for the app's life
(`CronRuntime`): a call pays for none of them again, only for its own
dispatcher (its connections and its summary).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox import metrics
from outbox.api.auth import require_cron_secret
from outbox.api.schemas import ERROR_RESPONSES, CronPass
from outbox.db import queries
from outbox.dispatch.runtime import Runtime, open_runtime
from outbox.errors import CronBusy
from outbox.events.callbacks import CALLBACK_RUN_SECONDS, CallbackSender, send_callbacks_once
from outbox.maintenance.upkeep import run_upkeep
from outbox.settings import Settings

DEFAULT_BUDGET_SECONDS = 25.0  # fits the 30 s request limit of most schedulers
MAX_BUDGET_SECONDS = 300.0
CRON_LOCK_KEY = 0x0B0C_0010  # beside the maintenance services' keys (0x0B0C_000n)

router = APIRouter(prefix="/v1/cron", tags=["cron"])


class CronRuntime:
    """One Runtime for the app's life, opened by the first call that needs it
    (so an app without OUTBOX_ENCRYPTION_KEY still starts: the call answers
    the error instead), closed by `aclose` at shutdown."""

    def __init__(self, settings: Settings, database_url: str) -> None:
        self._settings = settings
        self._database_url = database_url
        self._stack = AsyncExitStack()
        self._runtime: Runtime | None = None
        self._opening = asyncio.Lock()

    async def get(self) -> Runtime:
        async with self._opening:
            if self._runtime is None:
                self._runtime = await self._stack.enter_async_context(
                    open_runtime(self._settings, url=self._database_url))
            return self._runtime

    async def aclose(self) -> None:
        self._runtime = None
        await self._stack.aclose()


def cron_runtime(request: Request) -> CronRuntime:
    runtime: CronRuntime = request.app.state.cron_runtime
    return runtime


@router.post("/dispatch", dependencies=[Depends(require_cron_secret)], response_model=CronPass,
             responses={
                 **ERROR_RESPONSES,
                 409: {**ERROR_RESPONSES[409], "description": "A pass is running"}})
async def cron_dispatch(
    request: Request,
    budget: float = Query(DEFAULT_BUDGET_SECONDS, gt=0, le=MAX_BUDGET_SECONDS,
                          description="stop claiming after this many seconds"),
) -> CronPass:
    """Rescue expired leases, lift expired pauses, send what is due (within
    `budget` seconds), post the status callbacks due, and return the
    summary; 409 `cron_busy` while another call's pass runs."""
    runtime = await cron_runtime(request).get()
    async with cron_turn(runtime.engine):
        await run_upkeep(runtime.engine, runtime.settings)
        async with metrics.instrumented_dispatcher(runtime) as dispatcher:
            summary = await dispatcher.drain(max_seconds=budget)
        # No daemon posts the status callbacks either: this pass does.
        await send_callbacks_once(runtime.engine, CallbackSender.from_settings(
            runtime.settings, run_seconds=min(budget, CALLBACK_RUN_SECONDS),
            observer=metrics.count_callback))
    return CronPass.model_validate(summary.as_dict())


@asynccontextmanager
async def cron_turn(engine: AsyncEngine) -> AsyncIterator[None]:
    """Hold the cron lock for the block, or raise CronBusy at once."""
    async with engine.connect() as conn, conn.begin():
        if not await conn.scalar(text(queries.TRY_CRON_LOCK), {"key": CRON_LOCK_KEY}):
            raise CronBusy("a cron dispatch pass is already running; call again after it ends")
        yield
