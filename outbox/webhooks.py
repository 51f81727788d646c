"""Whapi webhooks: delivery statuses and inbound messages.

Pure decisions first (parse a payload, order statuses), then the I/O that
applies them (db/webhook_queries.py). The HTTP route is thin: find the
channel, check its secret, parse, `process_webhook`, commit, 200.

Rules (shared/WHAPI.md "Webhooks"):
* A status moves a message forward only, along STATUS_ORDER; the final
  status is the furthest one whatever order webhooks come in; repeats and
  replays change nothing. Statuses for WhatsApp ids we don't know yet wait
  in a backlog (`apply_status_backlog`), because Whapi can report `sent`
  before the dispatcher has recorded the id its send returned.
* An inbound message (`from_me: false`) is stored once per
  (channel, WhatsApp id), with status `delivered` (it reached us; it
  becomes `read` when the chat is marked read); its chat's unread count
  goes up once, its last message moves forward, and an archived chat
  reopens.
* `from_me: true` messages are echoes of what this channel sent. Ours are
  already stored (by the dispatcher, with their WhatsApp id), and storing
  an echo that arrives before the dispatcher records the id would make
  that record collide with it; so echoes are never stored. Messages sent
  from the phone itself are therefore not recorded (a documented gap).
* Anything else in the payload (other event keys, unusable entries) is
  accepted and ignored: Whapi retries a webhook until it gets a 200, so
  only a payload that isn't JSON at all is refused.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from db import webhook_queries as q
from outbox.errors import ChannelNotFound, InvalidPhone, OutboxError
from outbox.jsonio import dumps_unicode, loads_untrusted
from outbox.phone import normalize_recipient

log = structlog.get_logger(__name__)

#: The header Whapi is configured to send with the channel's webhook secret.
SECRET_HEADER = "X-Outbox-Webhook-Secret"  # noqa: S105 (a header name)
#: Forward-only order; a status applies only if it ranks above the current one.
#: `deleted` and `failed` end a message's life: `deleted` can follow any
#: status but `failed`, and `failed` is terminal. A total order keeps the
#: result independent of arrival order.
STATUS_ORDER = ("pending", "sent", "delivered", "read", "played", "deleted", "failed")
STATUS_BACKLOG_TTL_SECONDS = 3600.0  # an id not recorded within the hour never will be
STATUS_BACKLOG_BATCH = 1000  # rows one apply_status_backlog pass takes
MAX_WA_ID_LENGTH = 200
MAX_PREVIEW_LENGTH = 100
# Unix timestamps outside this window are garbage, not dates.
_MIN_TS, _MAX_TS = 946_684_800, 4_102_444_800  # 2000-01-01 .. 2100-01-01


class MalformedWebhook(OutboxError):
    http_status = 400
    code = "malformed_webhook"


class WebhookUnauthorized(OutboxError):
    http_status = 401
    code = "unauthorized"


# --- pure: parse and decide -------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    wa_message_id: str
    status: str
    at: datetime | None


@dataclass(frozen=True, slots=True)
class InboundMessage:
    wa_message_id: str
    wa_chat_id: str
    phone: str  # the chat's contact: E.164, or the group's chat id
    is_group: bool
    contact_name: str | None
    type: str
    body: str | None
    preview: str
    payload: dict[str, Any]
    sent_at: datetime | None


@dataclass(slots=True)
class ParsedWebhook:
    statuses: list[StatusUpdate] = field(default_factory=list)
    inbound: list[InboundMessage] = field(default_factory=list)
    echoes: int = 0  # from_me messages: our own sends coming back
    ignored: int = 0  # entries we can't use (no id, unknown status, odd chat id)


def parse_body(raw: bytes) -> Any:
    """The request body as JSON; `MalformedWebhook` if it is not."""
    try:
        return loads_untrusted(raw)
    except UnicodeDecodeError:
        raise MalformedWebhook("webhook body is not valid JSON") from None
    except ValueError as exc:
        raise MalformedWebhook(f"webhook body is not usable JSON: {exc}") from None


def parse_webhook(payload: Any) -> ParsedWebhook:
    """Statuses and inbound messages from one webhook (an object, or a list
    of objects: a batch). Raises `MalformedWebhook` only when the payload is
    not an object or a list of objects; everything else is used or ignored."""
    events = payload if isinstance(payload, list) else [payload]
    if not all(isinstance(e, dict) for e in events):
        raise MalformedWebhook("webhook body must be a JSON object or a list of objects")
    out = ParsedWebhook()
    for event in events:
        statuses = event.get("statuses")
        if isinstance(statuses, list):
            for s in statuses:
                update = parse_status(s)
                if update is None:
                    out.ignored += 1
                else:
                    out.statuses.append(update)
        elif statuses is not None:
            out.ignored += 1
        messages = event.get("messages")
        if isinstance(messages, list):
            for m in messages:
                if isinstance(m, dict) and m.get("from_me") is True:
                    out.echoes += 1
                    continue
                inbound = parse_inbound(m)
                if inbound is None:
                    out.ignored += 1
                else:
                    out.inbound.append(inbound)
        elif messages is not None:
            out.ignored += 1
    return out


def parse_status(entry: Any) -> StatusUpdate | None:
    if not isinstance(entry, dict):
        return None
    wa_id = _wa_id(entry.get("id"))
    status = entry.get("status")
    if wa_id is None or status not in STATUS_ORDER:
        return None
    return StatusUpdate(wa_id, status, parse_timestamp(entry.get("timestamp")))


def parse_inbound(entry: Any) -> InboundMessage | None:
    # Only an explicit from_me: false is someone else's message.
    if not isinstance(entry, dict) or entry.get("from_me") is not False:
        return None
    wa_id = _wa_id(entry.get("id"))
    raw_chat = entry.get("chat_id") or entry.get("from")
    if wa_id is None or not isinstance(raw_chat, str):
        return None
    try:
        chat = normalize_recipient(raw_chat)
    except InvalidPhone:
        return None  # newsletters, status broadcasts, ids we don't model
    raw_kind = entry.get("type")
    kind = (_clean(raw_kind)[:50] or "unknown") if isinstance(raw_kind, str) else "unknown"
    body = _body_of(kind, entry)
    name = entry.get("chat_name") if chat.is_group else entry.get("from_name")
    name = (_clean(name)[:200] or None) if isinstance(name, str) else None
    preview = body if body else f"[{kind}]"
    return InboundMessage(
        wa_message_id=wa_id,
        wa_chat_id=chat.wa_chat_id,
        phone=chat.phone,
        is_group=chat.is_group,
        contact_name=name,
        type=kind,
        body=body,
        preview=preview[:MAX_PREVIEW_LENGTH],
        payload=_strip_nul(entry),
        sent_at=parse_timestamp(entry.get("timestamp")),
    )


def parse_timestamp(value: Any) -> datetime | None:
    """Whapi sends unix seconds: a number on messages, a string on statuses."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or not _MIN_TS <= value <= _MAX_TS:
        return None
    return datetime.fromtimestamp(value, UTC)


def status_rank(status: str) -> int:
    return STATUS_ORDER.index(status)


def next_status(current: str, incoming: str) -> str | None:
    """The message's new status, or None when `incoming` changes nothing.
    The SQL in db/webhook_queries.py applies exactly this rule."""
    return incoming if status_rank(incoming) > status_rank(current) else None


def furthest_status(statuses: Iterable[str], start: str = "pending") -> str:
    """Where a message ends up after `statuses`, in any order."""
    current = start
    for s in statuses:
        current = next_status(current, s) or current
    return current


def secret_matches(expected: str, presented: str | None) -> bool:
    """Constant-time comparison (a timing difference must not reveal a prefix)."""
    if not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())


def _wa_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    wa_id: str = value.strip()
    if not wa_id or len(wa_id) > MAX_WA_ID_LENGTH or "\x00" in wa_id:
        return None
    return wa_id


def _body_of(kind: str, entry: Mapping[str, Any]) -> str | None:
    content = entry.get(kind)
    if not isinstance(content, dict):
        return None
    value = content.get("body") if kind == "text" else content.get("caption")
    if not isinstance(value, str):
        return None
    return _clean(value) or None


def _clean(value: str) -> str:
    # PostgreSQL text (and jsonb) can't hold NUL.
    return value.replace("\x00", "")


def _strip_nul(value: Any) -> Any:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(str(k)): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    return value


# --- I/O ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookChannel:
    id: uuid.UUID
    workspace_id: str
    webhook_secret: str


@dataclass(slots=True)
class WebhookResult:
    statuses_applied: int = 0
    statuses_unchanged: int = 0  # known message, nothing to move (repeat, late, replay)
    statuses_backlogged: int = 0  # unknown id yet: waiting in the backlog
    messages_inserted: int = 0
    messages_duplicate: int = 0
    echoes: int = 0
    ignored: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "statuses": {"applied": self.statuses_applied, "unchanged": self.statuses_unchanged,
                         "backlogged": self.statuses_backlogged},
            "messages": {"inserted": self.messages_inserted,
                         "duplicates": self.messages_duplicate, "echoes": self.echoes},
            "ignored": self.ignored,
        }


@dataclass(frozen=True, slots=True)
class BacklogResult:
    applied: int  # messages moved forward
    taken: int  # backlog rows consumed (their id is known now)
    expired: int


def find_webhook_channel(session: Session, channel_id: str) -> WebhookChannel:
    """The channel a webhook URL names; `ChannelNotFound` for unknown or
    malformed ids (both are 404: the URL names nothing)."""
    try:
        cid = uuid.UUID(channel_id)
    except ValueError:
        raise ChannelNotFound("no such channel", field="channel_id") from None
    row = session.execute(text(q.CHANNEL_FOR_WEBHOOK), {"channel_id": cid}).one_or_none()
    if row is None:
        raise ChannelNotFound("no such channel", field="channel_id")
    return WebhookChannel(row.id, row.workspace_id, row.webhook_secret)


def check_webhook_secret(channel: WebhookChannel, presented: str | None) -> None:
    if not secret_matches(channel.webhook_secret, presented):
        raise WebhookUnauthorized(
            f"missing or wrong {SECRET_HEADER} header (see: outbox channel webhook-info)"
        )


def process_webhook(session: Session, channel: WebhookChannel, payload: Any) -> WebhookResult:
    """Apply one webhook in the caller's transaction (never commits)."""
    parsed = parse_webhook(payload)
    result = WebhookResult(echoes=parsed.echoes, ignored=parsed.ignored)
    if parsed.statuses:
        _apply_statuses(session, channel, parsed.statuses, result)
    for message in parsed.inbound:
        _store_inbound(session, channel, message, result)
    return result


def _apply_statuses(session: Session, channel: WebhookChannel, statuses: list[StatusUpdate],
                    result: WebhookResult) -> None:
    row = session.execute(text(q.APPLY_STATUSES), {
        "channel_id": channel.id,
        "ranks": list(STATUS_ORDER),
        "wa_message_ids": [s.wa_message_id for s in statuses],
        "statuses": [s.status for s in statuses],
        "status_ats": [s.at for s in statuses],
    }).one()
    distinct_known = int(row.known)
    result.statuses_applied += int(row.applied)
    result.statuses_unchanged += distinct_known - int(row.applied)
    result.statuses_backlogged += int(row.backlogged)


def _store_inbound(session: Session, channel: WebhookChannel, m: InboundMessage,
                   result: WebhookResult) -> None:
    ws = channel.workspace_id
    contact_id = _get_or_create(
        session, q.INSERT_CONTACT, q.SELECT_CONTACT,
        {"workspace_id": ws, "phone": m.phone, "name": m.contact_name, "is_group": m.is_group})
    chat_id = _get_or_create(
        session, q.INSERT_CHAT, q.SELECT_CHAT,
        {"workspace_id": ws, "channel_id": channel.id, "wa_chat_id": m.wa_chat_id,
         "contact_id": contact_id})
    row = session.execute(text(q.INSERT_INBOUND_MESSAGE), {
        "workspace_id": ws, "channel_id": channel.id, "chat_id": chat_id, "type": m.type,
        "body": m.body, "payload": dumps_unicode(m.payload),
        "wa_message_id": m.wa_message_id, "sent_at": m.sent_at, "preview": m.preview,
    }).one()
    if row.message_id is None:
        result.messages_duplicate += 1
    else:
        result.messages_inserted += 1


def _get_or_create(session: Session, insert_sql: str, select_sql: str,
                   params: dict[str, Any]) -> uuid.UUID:
    created = session.execute(text(insert_sql), params).scalar_one_or_none()
    if created is not None:
        return created  # type: ignore[no-any-return]
    return session.execute(text(select_sql), params).scalar_one()  # type: ignore[no-any-return]


def apply_status_backlog(
    session: Session,
    *,
    channel_id: uuid.UUID | None = None,
    limit: int = STATUS_BACKLOG_BATCH,
    expire_after_seconds: float = STATUS_BACKLOG_TTL_SECONDS,
) -> BacklogResult:
    """Apply backlogged statuses whose message now carries the WhatsApp id,
    and drop the ones too old to ever match. In the caller's transaction.

    The HTTP service runs this after every status webhook (for that channel)
    and every few seconds; a daemon may run it on a schedule too.
    Concurrent callers split the work (SKIP LOCKED).
    """
    row = session.execute(text(q.APPLY_STATUS_BACKLOG), {
        "channel_id": channel_id, "limit": limit, "ranks": list(STATUS_ORDER)}).one()
    expired = 0
    if channel_id is None:
        expired = session.execute(text(q.EXPIRE_STATUS_BACKLOG), {  # type: ignore[attr-defined]
            "older_than_seconds": expire_after_seconds, "limit": limit}).rowcount
        if expired:
            log.info("webhook_status_backlog_expired", rows=expired)
    return BacklogResult(applied=int(row.applied), taken=int(row.taken), expired=expired)


async def apply_status_backlog_async(engine: AsyncEngine) -> BacklogResult:
    """`apply_status_backlog` in its own transaction, for an asyncio scheduler
    (the daemon's maintenance jobs)."""
    async with AsyncSession(engine) as session, session.begin():
        return await session.run_sync(lambda s: apply_status_backlog(s))
