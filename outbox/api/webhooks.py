"""Whapi -> us: `/webhooks/whapi/{channel_id}` in each of Whapi's webhook modes.

* `body` (Whapi's default): POST to the URL, the event named in the body;
* `path`: POST to the URL + `/<type>/<method>` (`/messages/post`,
  `/statuses/put`, ...);
* `method`: the URL + `/<type>`, with the event's own HTTP method (POST,
  PUT, PATCH, DELETE). Whapi's own example bots use this one.

Checks first that the channel exists and the secret header matches it: a
wrong secret and an unknown channel get the same 401 after the same
constant-time comparison, so a caller can't tell which channel ids exist.
So does a secret stored in the clear, unless OUTBOX_ACCEPT_PLAINTEXT_WEBHOOK_SECRETS
is set (see outbox.webhooks.apply.check_webhook_secret).
Then the body is applied in one transaction and answered 200, also
when we can't use it: such a body is kept as a webhook dead letter, because
Whapi retries anything but a 200 forever. A database failure is a 5xx, so
Whapi retries; applying a webhook twice changes nothing, so retries are safe.
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
from outbox.errors import ChannelNotFound
from outbox.webhooks.apply import (
    SECRET_HEADER,
    WebhookChannel,
    WebhookResult,
    apply_pending,
    apply_status_backlog,
    check_webhook_secret,
    find_webhook_channel,
    process_webhook_body,
    reject_webhook_secret,
)
from outbox.webhooks.routes import EventName

WEBHOOK_MAX_BODY_BYTES = 5 * 1024 * 1024
PREFIX = "/webhooks/whapi/{channel_id}"
#: Whapi's event types and methods (its `Event` schema): what a path may name.
EVENT_TYPES = frozenset({"messages", "statuses", "chats", "contacts", "groups", "presences",
                         "calls", "channel", "users", "labels", "service"})
EVENT_METHODS = frozenset({"post", "put", "patch", "delete"})

log = structlog.get_logger(__name__)
router = APIRouter(tags=["webhooks"])
_SECRET = {"parameters": [{"name": SECRET_HEADER, "in": "header", "required": True,
                           "schema": {"type": "string"}}]}


@router.post(PREFIX, responses=ERROR_RESPONSES, openapi_extra=_SECRET)
async def whapi_webhook(channel_id: str, request: Request) -> dict[str, Any]:
    """Mode `body`: every event kind, named in the body's `event`."""
    return await _receive(request, channel_id, None)


@router.post(PREFIX + "/{event_type}/{event_method}", responses=ERROR_RESPONSES,
             openapi_extra=_SECRET)
async def whapi_webhook_path(channel_id: str, event_type: str, event_method: str,
                             request: Request) -> dict[str, Any]:
    """Mode `path`: the event named by the URL (`/messages/post`, `/statuses/put`, ...)."""
    return await _receive(request, channel_id, _event(event_type, event_method))


async def whapi_webhook_method(channel_id: str, event_type: str,
                               request: Request) -> dict[str, Any]:
    """Mode `method`: the event's type in the URL, its method as the HTTP method."""
    return await _receive(request, channel_id, _event(event_type, request.method))


for _method in ("POST", "PUT", "PATCH", "DELETE"):  # one operation each (distinct OpenAPI ids)
    router.add_api_route(PREFIX + "/{event_type}", whapi_webhook_method, methods=[_method],
                         operation_id=f"whapi_webhook_method_{_method.lower()}",
                         responses=ERROR_RESPONSES, openapi_extra=_SECRET)


def _event(event_type: str, method: str) -> EventName:
    # An unknown name is not refused (a 404 would make Whapi retry forever):
    # the body is still read, and its own `event` wins.
    kind = event_type.lower()
    verb = method.lower()
    return EventName(kind if kind in EVENT_TYPES else None,
                     verb if verb in EVENT_METHODS else None)


async def _receive(request: Request, channel_id: str, hint: EventName | None) -> dict[str, Any]:
    ctx = context(request)
    secret = request.headers.get(SECRET_HEADER)
    channel = await run_in_threadpool(_authenticate, ctx, channel_id, secret)
    raw = await read_body(request, limit=WEBHOOK_MAX_BODY_BYTES)
    result = await run_in_threadpool(_apply, ctx, channel, raw, hint)
    metrics.count_webhook(result, hint)
    return {"ok": True, **result.as_dict()}


def _authenticate(ctx: AppContext, channel_id: str, secret: str | None) -> WebhookChannel:
    try:
        with ctx.transaction() as session:
            channel: WebhookChannel | None = find_webhook_channel(session, channel_id)
    except ChannelNotFound:
        channel = None
    if channel is None:
        # Compared against a secret nobody holds, so it costs what a known
        # channel's check costs, and answered as a wrong secret.
        reject_webhook_secret(secret)
    check_webhook_secret(channel, secret, ctx.settings.decryption_keys(),
                         accept_plaintext=ctx.settings.accept_plaintext_webhook_secrets)
    return channel


def _apply(ctx: AppContext, channel: WebhookChannel, raw: bytes,
           hint: EventName | None) -> WebhookResult:
    with ctx.transaction() as session:
        result = process_webhook_body(session, channel, raw, hint=hint)
    if (result.statuses_backlogged or result.statuses_applied or result.statuses_unchanged
            or result.messages_inserted):
        # What waited for a message of this channel may find it now.
        try:
            with ctx.transaction() as session:
                apply_status_backlog(session, channel_id=channel.id)
                apply_pending(session, channel_id=channel.id)
        except Exception as exc:  # the webhook itself is stored; the timer retries this
            log.warning("webhook_backlog_apply_failed", error=type(exc).__name__)
    return result
