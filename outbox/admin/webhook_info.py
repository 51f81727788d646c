"""Where Whapi should send a channel's webhooks, and how: for
`outbox channel webhook-info` and GET /v1/channels/{id}/webhook-info; and
the same after a new secret (`outbox channel rotate-webhook-secret`,
POST /v1/channels/{id}/webhook-secret)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session

from outbox.admin.channels import get_channel, webhook_secret_of
from outbox.admin.webhook_secrets import DEFAULT_KEEP_OLD, rotate_webhook_secret
from outbox.settings import Settings
from outbox.webhooks.apply import SECRET_HEADER, whapi_webhook_settings


def public_base_url(settings: Settings) -> str:
    """OUTBOX_PUBLIC_URL, else the local listen address (which Whapi can't reach)."""
    return (settings.public_url or f"http://{settings.http_host}:{settings.http_port}").rstrip("/")


def webhook_info(session: Session, settings: Settings, channel_id: uuid.UUID | str, *,
                 mode: str = "body", workspace_id: str | None = None) -> dict[str, Any]:
    """The channel's webhook URL, secret header, events, and the body of
    Whapi's PATCH /settings; `ChannelNotFound` outside `workspace_id`."""
    channel = get_channel(session, channel_id, workspace_id=workspace_id)
    secret = webhook_secret_of(channel.id, channel.webhook_secret, channel.base_url,
                               settings.decryption_keys())
    return _info(settings, channel.id, secret, mode)


def new_webhook_secret_info(session: Session, settings: Settings, channel_id: uuid.UUID | str,
                            *, keep_old_for: timedelta = DEFAULT_KEEP_OLD, mode: str = "body",
                            workspace_id: str | None = None) -> dict[str, Any]:
    """`rotate_webhook_secret`, answered as `webhook_info` (with the new
    secret) plus `previous_secret_valid_until` (None: the old secret no
    longer works)."""
    rotated = rotate_webhook_secret(session, channel_id, workspace_id=workspace_id,
                                    encryption_key=settings.require_encryption_key(),
                                    keep_old_for=keep_old_for)
    return _info(settings, rotated.channel_id, rotated.secret, mode) | {
        "previous_secret_valid_until": rotated.previous_valid_until}


def _info(settings: Settings, channel_id: uuid.UUID, secret: str, mode: str) -> dict[str, Any]:
    url = f"{public_base_url(settings)}/webhooks/whapi/{channel_id}"
    whapi = whapi_webhook_settings(url, secret, mode=mode)
    return {"channel_id": str(channel_id), "url": url, "mode": mode,
            "header": SECRET_HEADER, "secret": secret,
            "events": whapi["webhooks"][0]["events"], "whapi_settings": whapi,
            "public_url_set": settings.public_url is not None}
