"""Where Whapi should send a channel's webhooks, and how: for
`outbox channel webhook-info` and GET /v1/channels/{id}/webhook-info."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from outbox.admin.channels import get_channel, webhook_secret_of
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
    url = f"{public_base_url(settings)}/webhooks/whapi/{channel.id}"
    whapi = whapi_webhook_settings(url, secret, mode=mode)
    return {"channel_id": str(channel.id), "url": url, "mode": mode,
            "header": SECRET_HEADER, "secret": secret,
            "events": whapi["webhooks"][0]["events"], "whapi_settings": whapi,
            "public_url_set": settings.public_url is not None}
