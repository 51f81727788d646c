"""/v1/webhook-endpoints: where a workspace's events are posted, signed
(status callbacks, outbox/events/callbacks.py). Admin scope. The same
services as `outbox endpoints` (outbox/admin/endpoints.py).

The signing secret is in the answer to POST, and never again.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.concurrency import run_in_threadpool

from outbox.admin import endpoints as service
from outbox.api.auth import Admin
from outbox.api.body import parse_model, read_body
from outbox.api.context import context
from outbox.api.schemas import ERROR_RESPONSES

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhook endpoints"])


class NewEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: StrictStr = Field(description="https (http only to localhost)")
    event_types: list[StrictStr] | None = Field(
        default=None, description="the event types to post (default: all)")


_NEW_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": NewEndpoint.model_json_schema()}}}}


@router.post("", status_code=201, openapi_extra=_NEW_BODY, responses=ERROR_RESPONSES)
async def add_endpoint(request: Request, principal: Admin) -> JSONResponse:
    """Add an endpoint. The answer's `secret` (whsec_...) signs every
    request (Standard Webhooks): it is shown this once."""
    body = parse_model(NewEndpoint, await read_body(request))
    ctx = context(request)

    def run() -> service.NewEndpoint:
        key = ctx.settings.require_encryption_key()
        with ctx.transaction() as session:
            return service.add_endpoint(session, workspace_id=principal.workspace_id,
                                        url=body.url, event_types=body.event_types,
                                        encryption_key=key)

    new = await run_in_threadpool(run)
    log.info("webhook_endpoint_added", endpoint_id=str(new.endpoint.id),
             workspace_id=principal.workspace_id)
    return JSONResponse(new.endpoint.as_dict() | {"secret": new.secret}, status_code=201)


@router.get("", responses=ERROR_RESPONSES)
async def list_endpoints(request: Request, principal: Admin) -> dict[str, Any]:
    """`{"endpoints": [...]}`, each with its state and deliveries waiting or failed."""
    ctx = context(request)

    def run() -> dict[str, Any]:
        with ctx.transaction() as session:
            found = service.list_endpoints(session, workspace_id=principal.workspace_id)
        return {"endpoints": [e.as_dict() for e in found]}

    return await run_in_threadpool(run)


@router.delete("/{endpoint_id}", status_code=204, responses=ERROR_RESPONSES)
async def remove_endpoint(endpoint_id: str, request: Request, principal: Admin) -> Response:
    """Remove an endpoint and its deliveries: nothing more is posted to it."""
    ctx = context(request)

    def run() -> None:
        with ctx.transaction() as session:
            service.remove_endpoint(session, endpoint_id, workspace_id=principal.workspace_id)

    await run_in_threadpool(run)
    log.info("webhook_endpoint_removed", endpoint_id=endpoint_id[:40])
    return Response(status_code=204)


@router.get("/{endpoint_id}/deliveries", responses=ERROR_RESPONSES)
async def get_deliveries(
    endpoint_id: str, request: Request, principal: Admin,
    before: Annotated[int | None, Query(ge=0, description="a delivery id: older ones")] = None,
    limit: int = Query(service.DEFAULT_DELIVERY_PAGE, ge=1, le=service.MAX_DELIVERY_PAGE),
) -> dict[str, Any]:
    """`{"deliveries": [...]}`, newest first: status (pending, delivering,
    delivered, failed), attempts, the last answer's status code or error."""
    ctx = context(request)

    def run() -> dict[str, Any]:
        with ctx.transaction() as session:
            return {"deliveries": service.deliveries(
                session, endpoint_id, workspace_id=principal.workspace_id, before=before,
                limit=limit)}

    return await run_in_threadpool(run)
