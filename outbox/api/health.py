"""GET /healthz (the process answers), GET /readyz (database reachable and
migrated to head). Prometheus metrics are not here: they name every
workspace's channels, so they have a listener of their own
(outbox.metrics, OUTBOX_METRICS_HOST/PORT)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from outbox.api.context import AppContext, context
from outbox.db.engine import engine_schema
from outbox.migrate import head_revision, revision_on

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    ready, body = await run_in_threadpool(_readiness, context(request))
    return JSONResponse(body, status_code=200 if ready else 503)


def _readiness(ctx: AppContext) -> tuple[bool, dict[str, object]]:
    head = head_revision()
    try:
        with ctx.engine.connect() as conn:
            current = revision_on(conn, engine_schema(ctx.engine))
    except Exception as exc:
        return False, {"status": "unavailable",
                       "reason": f"database unreachable ({type(exc).__name__})"}
    if current != head:
        return False, {"status": "unavailable",
                       "reason": f"migrations not at head (database: {current or 'empty'}, "
                                 f"code: {head}): run outbox db upgrade",
                       "revision": current, "head": head}
    return True, {"status": "ready", "revision": current}
