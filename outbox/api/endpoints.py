"""/v1/webhook-endpoints: where a workspace's events are posted, signed
(status callbacks, outbox/events/callbacks.py). Admin scope. The same
services as `outbox endpoints` (outbox/admin/endpoints.py).

The signing secret is in the answer to POST, and never again.
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr
from starlette.concurrency import run_in_threadpool

from outbox.admin import endpoints as service
from outbox.api.auth import Admin
from outbox.api.body import parse_model, read_body
from outbox.api.context import context
from outbox.api.schemas import ERROR_RESPONSES
from outbox.states import DeliveryStatus, EndpointStatus

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["webhook endpoints"])


class NewEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: StrictStr = Field(description="https (http only to localhost)")
    event_types: list[StrictStr] | None = Field(
        default=None, description="the event types to post (default: all)")


class EnableOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retry_failed: StrictBool = Field(
        default=False, description="send its dead-lettered deliveries (still held) again too")


class WebhookEndpoint(BaseModel):
    """A webhook endpoint: never its secret."""

    id: str
    url: str
    event_types: list[str]
    status: EndpointStatus
    disabled_reason: str | None = Field(
        description="why it was disabled: a 410 Gone, or failing since when")
    failing_since: str | None = Field(description="ISO 8601: no 2xx since (null: healthy)")
    created_at: str
    deliveries_waiting: int = Field(description="pending, or on the wire")
    deliveries_failed: int = Field(description="dead-lettered, still held")


class CreatedWebhookEndpoint(WebhookEndpoint):
    secret: str = Field(description="whsec_...: signs every request; shown this once")


class EnabledWebhookEndpoint(WebhookEndpoint):
    deliveries_resumed: int = Field(description="deliveries due again at once")


class WebhookEndpointList(BaseModel):
    endpoints: list[WebhookEndpoint]


class WebhookDelivery(BaseModel):
    id: int
    event_id: int
    event_type: str
    status: DeliveryStatus = Field(description="failed: a dead letter")
    attempts: int
    next_attempt_at: str | None
    last_status_code: int | None = Field(description="the receiver's last answer")
    last_error: str | None = Field(description="why the last attempt failed")
    created_at: str
    delivered_at: str | None


class WebhookDeliveryList(BaseModel):
    deliveries: list[WebhookDelivery] = Field(description="newest first")


def _body_schema(model: type[BaseModel], *, required: bool) -> dict[str, Any]:
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": model.model_json_schema()}}}}


@router.post("", status_code=201, response_model=CreatedWebhookEndpoint,
             openapi_extra=_body_schema(NewEndpoint, required=True), responses=ERROR_RESPONSES)
async def add_endpoint(request: Request, principal: Admin) -> CreatedWebhookEndpoint:
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
    return CreatedWebhookEndpoint(**new.endpoint.as_dict(), secret=new.secret)


@router.get("", response_model=WebhookEndpointList, responses=ERROR_RESPONSES)
async def list_endpoints(request: Request, principal: Admin) -> WebhookEndpointList:
    """The workspace's endpoints, each with its state and deliveries waiting or failed."""
    ctx = context(request)

    def run() -> WebhookEndpointList:
        with ctx.transaction() as session:
            found = service.list_endpoints(session, workspace_id=principal.workspace_id)
        return WebhookEndpointList(endpoints=[WebhookEndpoint(**e.as_dict()) for e in found])

    return await run_in_threadpool(run)


@router.post("/{endpoint_id}/enable", response_model=EnabledWebhookEndpoint,
             openapi_extra=_body_schema(EnableOptions, required=False),
             responses=ERROR_RESPONSES)
async def enable_endpoint(endpoint_id: str, request: Request,
                          principal: Admin) -> EnabledWebhookEndpoint:
    """Make a disabled endpoint active again (after fixing its receiver):
    its failure clock is cleared and the deliveries it had waiting are sent
    at once; with `retry_failed`, its dead letters still held too. Events
    that happened while it was disabled are not posted: read them from
    `GET /v1/events`."""
    raw = await read_body(request)
    options = parse_model(EnableOptions, raw) if raw.strip() else EnableOptions()
    ctx = context(request)

    def run() -> service.EnabledEndpoint:
        with ctx.transaction() as session:
            return service.enable_endpoint(session, endpoint_id,
                                           workspace_id=principal.workspace_id,
                                           retry_failed=options.retry_failed)

    enabled = await run_in_threadpool(run)
    log.info("webhook_endpoint_enabled", endpoint_id=str(enabled.endpoint.id),
             resumed=enabled.resumed)
    return EnabledWebhookEndpoint(**enabled.endpoint.as_dict(), deliveries_resumed=enabled.resumed)


@router.delete("/{endpoint_id}", status_code=204, response_class=Response,
               responses=ERROR_RESPONSES)
async def remove_endpoint(endpoint_id: str, request: Request, principal: Admin) -> Response:
    """Remove an endpoint and its deliveries: nothing more is posted to it."""
    ctx = context(request)

    def run() -> None:
        with ctx.transaction() as session:
            service.remove_endpoint(session, endpoint_id, workspace_id=principal.workspace_id)

    await run_in_threadpool(run)
    log.info("webhook_endpoint_removed", endpoint_id=endpoint_id[:40])
    return Response(status_code=204)


@router.get("/{endpoint_id}/deliveries", response_model=WebhookDeliveryList,
            responses=ERROR_RESPONSES)
async def get_deliveries(
    endpoint_id: str, request: Request, principal: Admin,
    before: Annotated[int | None, Query(ge=0, description="a delivery id: older ones")] = None,
    limit: int = Query(service.DEFAULT_DELIVERY_PAGE, ge=1, le=service.MAX_DELIVERY_PAGE),
) -> WebhookDeliveryList:
    """The endpoint's deliveries, newest first: status (pending, delivering,
    delivered, failed), attempts, the last answer's status code or error."""
    ctx = context(request)

    def run() -> WebhookDeliveryList:
        with ctx.transaction() as session:
            found = service.deliveries(session, endpoint_id, workspace_id=principal.workspace_id,
                                       before=before, limit=limit)
        return WebhookDeliveryList(deliveries=[WebhookDelivery(**d) for d in found])

    return await run_in_threadpool(run)
