"""Shared by the inbox tests: inbound messages through the webhook code,
row counts, a channel wired to the simulator's webhooks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.webhooks.apply import WebhookChannel, process_webhook, whapi_webhook_settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def inbound(engine: Engine, channel_id: uuid.UUID, chat: str, body: str = "hi", *,
            name: str | None = None, at: datetime | None = None,
            wa_id: str | None = None, group_name: str | None = None) -> str:
    """One inbound message through the webhook code (as Whapi posts it);
    `chat` is a phone's digits or a group id. Returns its WhatsApp id."""
    wa_id = wa_id or f"in-{uuid.uuid4().hex}"
    chat_id = chat if "@" in chat else f"{chat}@s.whatsapp.net"
    entry: dict[str, Any] = {"id": wa_id, "from_me": False, "type": "text", "chat_id": chat_id,
                             "timestamp": int((at or datetime.now(UTC)).timestamp()),
                             "text": {"body": body}}
    if name is not None:
        entry["from_name"] = name
    if group_name is not None:
        entry["chat_name"] = group_name
        entry["from"] = "15550999999"
    with Session(engine) as s, s.begin():
        ch = s.execute(text("SELECT workspace_id, webhook_secret FROM outbox.channels "
                            "WHERE id = :c"), {"c": channel_id}).one()
        process_webhook(s, WebhookChannel(channel_id, ch.workspace_id, ch.webhook_secret),
                        {"messages": [entry]})
    return wa_id


def chat_of(engine: Engine, wa_chat_id: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT id FROM outbox.chats WHERE wa_chat_id = :w"),
                                {"w": wa_chat_id}).scalar_one())


def query(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))


def wire_webhooks(ctl: Any, live_url: str, engine: Engine, channel_id: uuid.UUID,
                  token: str, *, delays_ms: dict[str, float] | None = None) -> None:
    """Configure the simulator's channel as `outbox channel webhook-info` says;
    `delays_ms`: when each send's statuses are posted (the simulator's default
    otherwise)."""
    from tests.api_fixtures import webhook_secret

    ctl.register_channel(token, phone="+14155550123")
    settings = whapi_webhook_settings(f"{live_url}/webhooks/whapi/{channel_id}",
                                      webhook_secret(engine, channel_id))
    (hook,) = settings["webhooks"]
    ctl.set_webhooks(hook["url"], token=token, headers=hook["headers"],
                     events=[(e["type"], e["method"]) for e in hook["events"]],
                     callback_backoff_delay_ms=50, delays_ms=delays_ms)
