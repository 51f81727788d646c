"""/v1/channels: the workspace's WhatsApp channels, for its admins (admin
scope). The same services as `outbox channel` (outbox/admin/channels.py).

A Whapi token goes in (create, replace) and never comes out: no response
and no log line carries it.
"""

from __future__ import annotations

from typing import Any, Literal

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr
from starlette.concurrency import run_in_threadpool

from outbox.admin.channels import (
    ChannelInfo,
    channel_queues,
    create_channel,
    get_channel,
    pause_channel,
    replace_channel_token,
    resume_channel,
)
from outbox.admin.pacing import set_limits
from outbox.admin.webhook_info import new_webhook_secret_info, webhook_info
from outbox.admin.webhook_secrets import DEFAULT_KEEP_OLD, MAX_KEEP_OLD_HOURS, keep_old_hours
from outbox.api.auth import Admin
from outbox.api.body import parse_model, read_body
from outbox.api.context import context
from outbox.api.schemas import (
    WARMUP_DESCRIPTION,
    Channel,
    ChannelList,
    ChannelWithLimits,
    NewWebhookSecret,
    WebhookInfo,
    error_responses,
)

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/channels", tags=["channels"])

MAX_PAUSE_SECONDS = 366 * 86400  # longer is "until resumed"


class NewChannel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr
    phone_number: StrictStr = Field(description="the channel's own number, E.164")
    token: StrictStr = Field(description="the Whapi channel token (stored encrypted, never shown)")
    base_url: StrictStr | None = Field(default=None, description="Whapi base URL for this channel")


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: StrictStr


class Pause(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float | None = Field(default=None, gt=0, le=MAX_PAUSE_SECONDS, allow_inf_nan=False,
                                  description="default: until resumed")
    reason: StrictStr | None = Field(default=None, description="shown in the channel list")


_Number = StrictInt | StrictFloat


class WebhookSecretChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_old_hours: _Number | None = Field(
        default=None, ge=0, le=MAX_KEEP_OLD_HOURS, allow_inf_nan=False,
        description="how long the old secret still works (default 24; 0: it stops at once)")


class ChannelChange(BaseModel):
    """The channel's send limits (docs/pacing.md): a field given changes that
    limit, null clears it, a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    per_second: _Number | None = Field(default=None, description="messages per second")
    burst: StrictInt | None = Field(default=None, description="how many may go at once")
    per_minute: StrictInt | None = Field(default=None, description="messages per clock minute")
    per_day: StrictInt | None = Field(
        default=None, description="messages per day in the channel's time zone")
    new_chats_per_day: StrictInt | None = Field(
        default=None, description="first messages per day to chats with no message yet either "
                                  "way (grown by the warm-up)")
    chat_gap: _Number | StrictStr | None = Field(
        default=None, description='least time between messages in one chat: seconds or "3s"')
    typing_time: StrictInt | StrictStr | None = Field(
        default=None, description="Whapi's typing_time (seconds) for texts without one")
    timezone: StrictStr | None = Field(default=None, description="IANA name; default UTC")
    warmup: StrictStr | None = Field(
        default=None, description=WARMUP_DESCRIPTION)


def _body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
    return {"requestBody": {"required": required, "content": {
        "application/json": {"schema": model.model_json_schema()}}}}


@router.get("", response_model=ChannelList, responses=error_responses())
async def list_channels(request: Request, principal: Admin) -> ChannelList:
    """The workspace's channels, each with its state, pause (reason, cause,
    until), queued rows and the oldest due one."""
    ctx = context(request)

    def run() -> ChannelList:
        with ctx.transaction() as session:
            queues = channel_queues(session, workspace_id=principal.workspace_id)
        return ChannelList.model_validate({"channels": [
            _channel(q.channel) | {"pause_cause": q.pause_cause, "queued": q.queued,
                                   "oldest_due_at": q.oldest_due_at}
            for q in queues]})

    return await run_in_threadpool(run)


@router.post("", status_code=201, response_model=Channel, openapi_extra=_body(NewChannel),
             responses=error_responses(body=True))
async def add_channel(request: Request, principal: Admin) -> Channel:
    """Add a channel with its Whapi token; the answer never includes the token."""
    body = parse_model(NewChannel, await read_body(request))
    ctx = context(request)

    def run() -> ChannelInfo:
        key = ctx.settings.require_encryption_key()
        with ctx.transaction() as session:
            return create_channel(session, name=body.name, phone_number=body.phone_number,
                                  token=body.token, encryption_key=key,
                                  workspace_id=principal.workspace_id, base_url=body.base_url,
                                  default_region=ctx.settings.default_region,
                                  allow_http=ctx.settings.allow_http_base_url)

    channel = await run_in_threadpool(run)
    log.info("channel_created", channel_id=str(channel.id), workspace_id=channel.workspace_id)
    return Channel.model_validate(_channel(channel))


@router.put("/{channel_id}/token", response_model=Channel, openapi_extra=_body(NewToken),
            responses=error_responses(body=True))
async def put_token(channel_id: str, request: Request, principal: Admin) -> Channel:
    """Replace the channel's token. A channel stopped by a bad token (disabled,
    or paused as unauthorized/credentials) is active again."""
    body = parse_model(NewToken, await read_body(request))
    ctx = context(request)

    def run() -> ChannelInfo:
        key = ctx.settings.require_encryption_key()
        with ctx.transaction() as session:
            return replace_channel_token(session, channel_id, token=body.token,
                                         encryption_key=key, workspace_id=principal.workspace_id)

    channel = await run_in_threadpool(run)
    log.info("channel_token_replaced", channel_id=str(channel.id))
    return Channel.model_validate(_channel(channel))


@router.post("/{channel_id}/pause", response_model=Channel,
             openapi_extra=_body(Pause, required=False), responses=error_responses(body=True))
async def pause(channel_id: str, request: Request, principal: Admin) -> Channel:
    """Stop sending on the channel (its rows stay queued), until resumed or for
    `seconds`. The body is optional."""
    raw = await read_body(request)
    body = parse_model(Pause, raw) if raw.strip() else Pause()
    ctx = context(request)

    def run() -> ChannelInfo:
        with ctx.transaction() as session:
            return pause_channel(session, channel_id, seconds=body.seconds,
                                 reason=body.reason or "paused by an admin",
                                 workspace_id=principal.workspace_id)

    return Channel.model_validate(_channel(await run_in_threadpool(run)))


@router.post("/{channel_id}/resume", response_model=Channel, responses=error_responses())
async def resume(channel_id: str, request: Request, principal: Admin) -> Channel:
    """Make a paused or disabled channel active again."""
    ctx = context(request)

    def run() -> ChannelInfo:
        with ctx.transaction() as session:
            return resume_channel(session, channel_id, workspace_id=principal.workspace_id)

    return Channel.model_validate(_channel(await run_in_threadpool(run)))


@router.patch("/{channel_id}", response_model=ChannelWithLimits,
              openapi_extra=_body(ChannelChange), responses=error_responses(body=True))
async def change(channel_id: str, request: Request, principal: Admin) -> ChannelWithLimits:
    """Change the channel's send limits; the answer is the channel with all
    its limits and today's usage. An empty object changes nothing."""
    body = parse_model(ChannelChange, await read_body(request))
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    ctx = context(request)

    def run() -> ChannelWithLimits:
        with ctx.transaction() as session:
            limits = set_limits(session, channel_id, workspace_id=principal.workspace_id,
                                **changes)
            channel = ChannelInfo.of(get_channel(session, channel_id,
                                                 workspace_id=principal.workspace_id))
        return ChannelWithLimits.model_validate(_channel(channel) | {"limits": limits.as_dict()})

    out = await run_in_threadpool(run)
    log.info("channel_limits_changed", channel_id=str(out.id), fields=sorted(changes))
    return out


@router.get("/{channel_id}/webhook-info", response_model=WebhookInfo,
            responses=error_responses())
async def get_webhook_info(channel_id: str, request: Request, principal: Admin,
                           mode: Literal["body", "path", "method"] = "body") -> WebhookInfo:
    """The webhook settings to give Whapi: URL, secret header, events, and the
    body of Whapi's PATCH /settings."""
    ctx = context(request)

    def run() -> WebhookInfo:
        with ctx.transaction() as session:
            return WebhookInfo.model_validate(webhook_info(
                session, ctx.settings, channel_id, mode=mode,
                workspace_id=principal.workspace_id))

    return await run_in_threadpool(run)


@router.post("/{channel_id}/webhook-secret", response_model=NewWebhookSecret,
             openapi_extra=_body(WebhookSecretChange, required=False),
             responses=error_responses(body=True))
async def new_webhook_secret(channel_id: str, request: Request, principal: Admin,
                             mode: Literal["body", "path", "method"] = "body"
                             ) -> NewWebhookSecret:
    """Give the channel a new webhook secret; the old one still works for
    `keep_old_hours` (default 24, at most 168). The answer is webhook-info's
    with the new secret, and until when the old one works. The body is
    optional."""
    raw = await read_body(request)
    body = parse_model(WebhookSecretChange, raw) if raw.strip() else WebhookSecretChange()
    keep = DEFAULT_KEEP_OLD if body.keep_old_hours is None else keep_old_hours(
        body.keep_old_hours)
    ctx = context(request)

    def run() -> NewWebhookSecret:
        with ctx.transaction() as session:
            return NewWebhookSecret.model_validate(new_webhook_secret_info(
                session, ctx.settings, channel_id, keep_old_for=keep, mode=mode,
                workspace_id=principal.workspace_id))

    out = await run_in_threadpool(run)
    log.info("channel_webhook_secret_rotated", channel_id=str(out.channel_id),
             previous_valid_until=out.previous_secret_valid_until)
    return out


def _channel(c: ChannelInfo) -> dict[str, Any]:
    return {"id": c.id, "workspace_id": c.workspace_id, "name": c.name,
            "phone_number": c.phone_number, "base_url": c.base_url, "status": c.status,
            "paused_until": c.paused_until, "pause_reason": c.pause_reason}
