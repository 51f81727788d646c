"""Whapi webhooks applied to the database: one handler per event kind.

`outbox.webhook_events` turns a body into typed events (pure); this module
applies them in the caller's transaction (`process_webhook`), with the SQL
in db/webhook_queries.py. The HTTP route is thin: find the channel, check
its secret, parse, `process_webhook`, commit, 200.

Rules (shared/WHAPI.md "Webhooks", DESIGN.md "Every webhook event is
routed or counted"):
* Every handler is idempotent under Whapi's retries and reorderings: a
  replay changes nothing, and the result doesn't depend on arrival order.
* Statuses move outbound messages forward only (STATUS_ORDER). Statuses
  for ids we don't know yet wait in a backlog (`apply_status_backlog`):
  Whapi can report `sent` before the dispatcher has recorded the id.
* A stored message is stored once per (channel, WhatsApp id): someone
  writing to us adds one unread and reopens an archived chat; a message
  typed on the channel's phone joins the thread as outbound; calls and
  system notes join the thread without touching the chat list.
* Reactions, edits and deletes apply to their target. One whose target
  is not stored yet waits in `webhook_pending` until it is (or expires);
  so does the echo of one of our own sends that beats the dispatcher's
  record of its id (if no message ever takes the id, someone else sent it
  with this channel's token, and it is stored then).
* A body, or an entry, we can't use is kept raw in `webhook_dead_letters`
  and answered 200: Whapi retries anything else forever.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from outbox.db import webhook_queries as q
from outbox.errors import ChannelNotFound, DecryptionFailed, MalformedWebhook, Unauthorized
from outbox.jsonio import dumps_unicode, parse_untrusted
from outbox.phone import Recipient, normalize_recipient
from outbox.states import Direction, MessageStatus, PendingKind
from outbox.webhooks.routes import (
    STATUS_ORDER,
    EventName,
    MessageAction,
    ParsedWebhook,
    StatusUpdate,
    StoredMessage,
    parse_webhook,
)

log = structlog.get_logger(__name__)

#: The header Whapi is configured to send with the channel's webhook secret.
SECRET_HEADER = "X-Outbox-Webhook-Secret"  # noqa: S105 (a header name)
STATUS_BACKLOG_TTL_SECONDS = 3600.0  # an id not recorded within the hour never will be
STATUS_BACKLOG_BATCH = 1000  # rows one apply_status_backlog pass takes
#: An echo of an API send waits this long for the dispatcher to record its
#: id (it normally does within a second); after that it was someone else's.
#: Well past a lease (60 s) and its rescue: stored earlier, the echo would
#: take the id a slow completion is about to record.
ECHO_WAIT_SECONDS = 900.0
#: A reaction, edit or delete waits this long for its message.
ACTION_WAIT_SECONDS = 3600.0
PENDING_BATCH = 500


__all__ = [
    "SECRET_HEADER",
    "STATUS_ORDER",
    "SUBSCRIBED_EVENTS",
    "WEBHOOK_MODES",
    "WRONG_SECRET",
    "WebhookChannel",
    "WebhookResult",
    "apply_pending",
    "apply_status_backlog",
    "check_webhook_secret",
    "find_webhook_channel",
    "furthest_status",
    "next_status",
    "parse_body",
    "process_webhook",
    "process_webhook_body",
    "reject_webhook_secret",
    "secret_matches",
    "whapi_webhook_settings",
]


# --- pure helpers -----------------------------------------------------------------


def parse_body(raw: bytes) -> Any:
    """The request body as JSON; `MalformedWebhook` if it is not."""
    return parse_untrusted(raw, MalformedWebhook, what="webhook body")


def status_rank(status: str) -> int:
    return STATUS_ORDER.index(status)


def next_status(current: str, incoming: str) -> str | None:
    """The message's new status, or None when `incoming` changes nothing.
    The SQL in db/webhook_queries.py applies exactly this rule."""
    return incoming if status_rank(incoming) > status_rank(current) else None


def furthest_status(statuses: Iterable[str], start: str = MessageStatus.PENDING) -> str:
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


#: Whapi's webhook modes (its WebhookParameters.mode).
WEBHOOK_MODES = ("body", "path", "method")
#: The events to subscribe, as Whapi's `events: [{type, method}]`: put is the
#: offline backlog (delivered after the channel was offline), patch the
#: edits, delete the removals; chats keep archive state, channel and users
#: report the WhatsApp session.
SUBSCRIBED_EVENTS: tuple[tuple[str, str], ...] = (
    ("messages", "post"), ("messages", "put"), ("messages", "patch"), ("messages", "delete"),
    ("statuses", "post"), ("statuses", "put"),
    ("chats", "post"), ("chats", "patch"), ("chats", "delete"),
    ("channel", "post"),
    ("users", "post"), ("users", "delete"),
)


def whapi_webhook_settings(url: str, secret: str, *, mode: str = "body") -> dict[str, Any]:
    """The body of Whapi's `PATCH /settings` that points a channel's webhooks
    here: our URL (every mode is served under it), the secret header, the mode
    and every event kind this service routes."""
    if mode not in WEBHOOK_MODES:
        raise ValueError(f"unknown webhook mode {mode!r} (one of {', '.join(WEBHOOK_MODES)})")
    return {"webhooks": [{
        "url": url, "mode": mode, "headers": {SECRET_HEADER: secret},
        "events": [{"type": t, "method": m} for t, m in SUBSCRIBED_EVENTS],
    }]}


# --- results ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WebhookChannel:
    id: uuid.UUID
    workspace_id: str
    webhook_secret: str  # as stored: encrypted (v2:...), or in the clear from older versions
    base_url: str | None = None
    #: The secret a rotation replaced, as stored, while its grace window lasts.
    previous_webhook_secret: str | None = None


@dataclass(slots=True)
class WebhookResult:
    statuses_applied: int = 0
    statuses_unchanged: int = 0  # known message, nothing to move (repeat, late, replay)
    statuses_backlogged: int = 0  # unknown id yet: waiting in the backlog
    messages_inserted: int = 0
    messages_duplicate: int = 0
    echoes: int = 0  # our own sends coming back (matched, or waiting for their record)
    actions_applied: int = 0  # reactions, edits, deletes that changed their target
    actions_unchanged: int = 0  # replays, or older than what the target holds
    actions_pending: int = 0  # target not stored yet: waiting in webhook_pending
    chats_changed: int = 0
    sessions: int = 0  # channel pauses/resumes from health and users events
    ignored: Counter[str] = field(default_factory=Counter)  # by kind
    dead_lettered: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "statuses": {"applied": self.statuses_applied, "unchanged": self.statuses_unchanged,
                         "backlogged": self.statuses_backlogged},
            "messages": {"inserted": self.messages_inserted,
                         "duplicates": self.messages_duplicate, "echoes": self.echoes},
            "actions": {"applied": self.actions_applied, "unchanged": self.actions_unchanged,
                        "pending": self.actions_pending},
            "chats": self.chats_changed,
            "sessions": self.sessions,
            "ignored": dict(self.ignored),
            "dead_lettered": self.dead_lettered,
        }


@dataclass(frozen=True, slots=True)
class BacklogResult:
    applied: int  # messages moved forward
    taken: int  # backlog rows consumed (their id is known now)
    expired: int


@dataclass(frozen=True, slots=True)
class PendingResult:
    applied: int  # actions applied to their (now stored) message
    echoes_matched: int  # echoes whose send the dispatcher recorded
    echoes_stored: int  # echoes nobody recorded: stored as outbound messages
    expired: int  # actions whose message never came


# --- the channel -------------------------------------------------------------------


WRONG_SECRET = f"missing or wrong {SECRET_HEADER} header (see: outbox channel webhook-info)"


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
    return WebhookChannel(row.id, row.workspace_id, row.webhook_secret, row.base_url,
                          row.previous_webhook_secret)


def check_webhook_secret(channel: WebhookChannel, presented: str | None,
                         keys: Sequence[str] = (), *, accept_plaintext: bool = False) -> None:
    """`Unauthorized` unless `presented` is the channel's secret (stored
    encrypted: `keys` read it, outbox/admin/channels.py), or the one a
    rotation replaced while its grace window lasts.

    A secret stored in the clear is refused like a wrong one unless
    `accept_plaintext` (OUTBOX_ACCEPT_PLAINTEXT_WEBHOOK_SECRETS): a database
    writer could plant one and forge this channel's webhooks. A previous
    secret in the clear is never accepted (a rotation never keeps one)."""
    from outbox.admin.channels import stored_in_clear, webhook_secret_of

    if stored_in_clear(channel.webhook_secret):
        if not accept_plaintext:
            _log_plaintext_refused(channel.id)
            reject_webhook_secret(presented)
        _log_plaintext_accepted(channel.id)
    expected = webhook_secret_of(channel.id, channel.webhook_secret, channel.base_url,
                                 list(keys))
    previous = _previous_secret(channel, keys)
    # Both comparisons every time (`|`, not `or`), as reject_webhook_secret
    # makes: which one matched, if any, doesn't show in the time taken.
    current_ok = secret_matches(expected, presented)
    previous_ok = secret_matches(previous or _NOBODYS_SECRET, presented) and previous is not None
    if current_ok | previous_ok:
        if not current_ok:
            _log_previous_used(channel.id)
        return
    raise Unauthorized(WRONG_SECRET)


def _previous_secret(channel: WebhookChannel, keys: Sequence[str]) -> str | None:
    """The replaced secret in the clear, if it is still in its window. One
    that decrypts with no key (the key it was under dropped before
    `outbox tokens rotate-key` ran) is left out rather than refusing the
    current secret too; `outbox tokens check` names it."""
    from outbox.admin.channels import stored_in_clear, webhook_secret_of

    stored = channel.previous_webhook_secret
    if stored is None or stored_in_clear(stored):
        return None
    try:
        return webhook_secret_of(channel.id, stored, channel.base_url, list(keys))
    except DecryptionFailed:
        return None


# Nobody holds it: what a refused webhook is compared against.
_NOBODYS_SECRET = secrets.token_urlsafe(32)


def reject_webhook_secret(presented: str | None) -> NoReturn:
    """Refuse as a wrong secret is refused, after the comparisons that
    checking a real secret makes (current and previous: the answer tells
    nothing more)."""
    secret_matches(_NOBODYS_SECRET, presented)
    secret_matches(_NOBODYS_SECRET, presented)
    raise Unauthorized(WRONG_SECRET)


#: A refused plaintext secret is logged at most this often per channel:
#: Whapi retries a refused webhook for hours, a line each time would bury the rest.
PLAINTEXT_REFUSED_LOG_INTERVAL_SECONDS = 300.0
_plaintext_refused_logged: dict[uuid.UUID, float] = {}
_plaintext_accepted_logged: set[uuid.UUID] = set()


def _log_plaintext_refused(channel_id: uuid.UUID) -> None:
    now = time.monotonic()
    last = _plaintext_refused_logged.get(channel_id)
    if last is not None and now - last < PLAINTEXT_REFUSED_LOG_INTERVAL_SECONDS:
        return
    _plaintext_refused_logged[channel_id] = now
    log.error("webhook_secret_in_clear_refused", channel_id=str(channel_id),
              fix="run `outbox tokens rotate-key` to encrypt it (docs/keys.md); "
                  "OUTBOX_ACCEPT_PLAINTEXT_WEBHOOK_SECRETS=true accepts it meanwhile")


_previous_used_logged: set[uuid.UUID] = set()


def _log_previous_used(channel_id: uuid.UUID) -> None:
    """Whapi still sends the replaced secret."""
    _warn_once(_previous_used_logged, channel_id, "webhook_previous_secret_used",
               fix="give Whapi the channel's new secret (`outbox channel webhook-info`) "
                   "before the old one's grace window ends")


def _log_plaintext_accepted(channel_id: uuid.UUID) -> None:
    _warn_once(_plaintext_accepted_logged, channel_id, "webhook_secret_in_clear_accepted",
               fix="run `outbox tokens rotate-key` to encrypt it, then unset "
                   "OUTBOX_ACCEPT_PLAINTEXT_WEBHOOK_SECRETS")


def _warn_once(said: set[uuid.UUID], channel_id: uuid.UUID, event: str, *, fix: str) -> None:
    """A warning once per channel and process: every webhook would repeat it."""
    if channel_id not in said:
        said.add(channel_id)
        log.warning(event, channel_id=str(channel_id), fix=fix)


# --- apply -------------------------------------------------------------------------


def process_webhook_body(session: Session, channel: WebhookChannel, raw: bytes, *,
                         hint: EventName | None = None) -> WebhookResult:
    """Apply one raw, authenticated body in the caller's transaction. A body
    that is not JSON, or holds entries we can't use, is kept as a dead letter
    (the usable rest is still applied); nothing here raises for bad input."""
    try:
        payload = parse_body(raw)
        parsed = parse_webhook(payload, hint=hint)
    except MalformedWebhook as exc:
        result = WebhookResult(dead_lettered=True)
        _dead_letter(session, channel, raw, hint, str(exc))
        return result
    result = apply_parsed(session, channel, parsed)
    if parsed.unusable:
        result.dead_lettered = True
        reasons = Counter(parsed.unusable)
        _dead_letter(session, channel, raw, hint,
                     "; ".join(f"{r} (x{n})" if n > 1 else r for r, n in reasons.items()))
    return result


def process_webhook(session: Session, channel: WebhookChannel, payload: Any, *,
                    hint: EventName | None = None) -> WebhookResult:
    """Apply one parsed JSON body in the caller's transaction (never commits).
    Unusable entries are counted (`ignored["unusable"]`), not kept: use
    `process_webhook_body` for the raw body, which keeps them."""
    parsed = parse_webhook(payload, hint=hint)
    result = apply_parsed(session, channel, parsed)
    if parsed.unusable:
        result.ignored["unusable"] += len(parsed.unusable)
    return result


def apply_parsed(session: Session, channel: WebhookChannel, parsed: ParsedWebhook
                 ) -> WebhookResult:
    result = WebhookResult(ignored=Counter(parsed.ignored))
    if parsed.statuses:
        _apply_statuses(session, channel, parsed.statuses, result)
    for message in parsed.messages:
        if _store_message(session, channel, message):
            result.messages_inserted += 1
        else:
            result.messages_duplicate += 1
    for echo in parsed.echoes:
        result.echoes += 1
        if not _message_exists(session, channel.id, echo.message.wa_message_id):
            _wait(session, channel.id, echo.message.wa_message_id, "echo", "echo",
                  _echo_json(echo.message), echo.message.sent_at)
    for action in parsed.actions:
        outcome = _apply_action(session, channel.id, action)
        if outcome == "applied":
            result.actions_applied += 1
        elif outcome == "unchanged":
            result.actions_unchanged += 1
        else:
            result.actions_pending += 1
    for seen in parsed.chats_seen:
        result.chats_changed += _ensure_chat(session, channel, seen.chat, seen.name)[1]
    for chat in parsed.chats:
        result.chats_changed += len(session.execute(text(q.SET_CHAT_ARCHIVED), {
            "channel_id": channel.id, "wa_chat_id": chat.wa_chat_id,
            "archived": chat.archived}).all())
    for change in parsed.sessions:
        changed = session.execute(text(q.SESSION_UP if change.up else q.SESSION_DOWN), {
            "channel_id": channel.id, "reason": change.reason}).all()
        if changed:
            result.sessions += 1
            log.warning("channel_session_resumed" if change.up else "channel_session_paused",
                        channel_id=str(channel.id), reason=change.reason)
    return result


def _apply_statuses(session: Session, channel: WebhookChannel, statuses: list[StatusUpdate],
                    result: WebhookResult) -> None:
    row = session.execute(text(q.APPLY_STATUSES), {
        "channel_id": channel.id,
        "ranks": list(STATUS_ORDER),
        "wa_message_ids": [s.wa_message_id for s in statuses],
        "statuses": [s.status for s in statuses],
        "status_ats": [s.at for s in statuses],
        "errors": [s.error for s in statuses],
    }).one()
    distinct_known = int(row.known)
    result.statuses_applied += int(row.applied)
    result.statuses_unchanged += distinct_known - int(row.applied)
    result.statuses_backlogged += int(row.backlogged)


def _ensure_chat(session: Session, channel: WebhookChannel, chat: Recipient,
                 name: str | None) -> tuple[uuid.UUID, bool]:
    """The chat's id (its contact and chat made if new) and whether it was made."""
    ws = channel.workspace_id
    contact_id, _ = _get_or_create(
        session, q.INSERT_CONTACT, q.SELECT_CONTACT,
        {"workspace_id": ws, "phone": chat.phone, "name": name, "is_group": chat.is_group})
    return _get_or_create(
        session, q.INSERT_CHAT, q.SELECT_CHAT,
        {"workspace_id": ws, "channel_id": channel.id, "wa_chat_id": chat.wa_chat_id,
         "contact_id": contact_id})


def _store_message(session: Session, channel: WebhookChannel, m: StoredMessage) -> bool:
    """Store one message (and its contact and chat); False if it already was."""
    ws = channel.workspace_id
    chat_id, _ = _ensure_chat(session, channel, m.chat, m.contact_name)
    row = session.execute(text(q.INSERT_MESSAGE), {
        "workspace_id": ws, "channel_id": channel.id, "chat_id": chat_id,
        "direction": m.direction, "type": m.type, "status": m.status,
        "body": m.body, "payload": dumps_unicode(m.payload),
        "wa_message_id": m.wa_message_id, "sent_at": m.sent_at, "preview": m.preview,
        "counts_unread": m.counts_unread, "in_listing": m.in_listing,
    }).one()
    return row.message_id is not None


def _get_or_create(session: Session, insert_sql: str, select_sql: str,
                   params: dict[str, Any]) -> tuple[uuid.UUID, bool]:
    """The row's id, and whether this call made it."""
    created = session.execute(text(insert_sql), params).scalar_one_or_none()
    if created is not None:
        return created, True
    return session.execute(text(select_sql), params).scalar_one(), False


def _message_exists(session: Session, channel_id: uuid.UUID, wa_message_id: str) -> bool:
    return bool(session.execute(text(q.MESSAGE_EXISTS), {
        "channel_id": channel_id, "wa_message_id": wa_message_id}).scalar_one())


_ACTION_SQL: dict[str, str] = {PendingKind.REACTION: q.APPLY_REACTION,
                               PendingKind.EDIT: q.APPLY_EDIT,
                               PendingKind.DELETE: q.APPLY_DELETE}


def _apply_action(session: Session, channel_id: uuid.UUID, action: MessageAction,
                  *, wait: bool = True) -> str:
    """"applied", "unchanged" or "pending" (target not stored: it waits,
    unless `wait` is False)."""
    at = action.at or datetime.now(UTC)
    params: dict[str, Any] = {"channel_id": channel_id, "target": action.target}
    if action.kind == PendingKind.REACTION:
        params.update(reactor=action.reactor, emoji=action.emoji, at=at.timestamp())
    elif action.kind == PendingKind.EDIT:
        params.update(body=action.body, content=dumps_unicode(action.content or {}), at=at)
    else:
        params.update(at=at)
    row = session.execute(text(_ACTION_SQL[action.kind]), params).one()
    if row.found:
        return "applied" if row.applied else "unchanged"
    if wait:
        _wait(session, channel_id, action.target, action.kind, action.key, action.as_json(), at)
    return "pending"


def _wait(session: Session, channel_id: uuid.UUID, wa_message_id: str, kind: str, key: str,
          payload: dict[str, Any], occurred_at: datetime | None) -> None:
    session.execute(text(q.INSERT_PENDING), {
        "channel_id": channel_id, "wa_message_id": wa_message_id, "kind": kind,
        "action_key": key[:200], "payload": dumps_unicode(payload),
        "occurred_at": occurred_at})


def _echo_json(m: StoredMessage) -> dict[str, Any]:
    return {"chat_id": m.chat.wa_chat_id, "type": m.type, "status": m.status, "body": m.body,
            "preview": m.preview, "payload": m.payload,
            "sent_at": m.sent_at.timestamp() if m.sent_at else None}


def _echo_message(wa_message_id: str, data: dict[str, Any]) -> StoredMessage:
    sent_at = data.get("sent_at")
    return StoredMessage(
        wa_message_id=wa_message_id, chat=normalize_recipient(str(data["chat_id"])),
        contact_name=None, direction=Direction.OUTBOUND, type=str(data["type"]),
        status=MessageStatus(data["status"]), body=data.get("body"),
        preview=str(data["preview"]),
        payload=dict(data["payload"]),
        sent_at=datetime.fromtimestamp(sent_at, UTC) if sent_at is not None else None,
        counts_unread=False, in_listing=data["type"] not in ("call", "system"))


def _dead_letter(session: Session, channel: WebhookChannel, raw: bytes,
                 hint: EventName | None, reason: str) -> None:
    session.execute(text(q.INSERT_DEAD_LETTER), {
        "channel_id": channel.id, "event_type": hint.type if hint else None,
        "event_method": hint.method if hint else None, "reason": reason[:1000], "body": raw,
        "body_sha256": hashlib.sha256(raw).hexdigest()})
    log.warning("webhook_dead_letter", channel_id=str(channel.id), reason=reason[:200],
                bytes=len(raw))


# --- what waits ---------------------------------------------------------------------


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


def apply_pending(
    session: Session,
    *,
    channel_id: uuid.UUID | None = None,
    limit: int = PENDING_BATCH,
    echo_wait_seconds: float = ECHO_WAIT_SECONDS,
    action_wait_seconds: float = ACTION_WAIT_SECONDS,
) -> PendingResult:
    """Actions and echoes whose message is stored now: apply (an echo: done,
    it was ours). Those past their wait: an echo is stored as an outbound
    message, an action is dropped. In the caller's transaction; concurrent
    callers split the work (SKIP LOCKED)."""
    rows = session.execute(text(q.TAKE_PENDING), {
        "channel_id": channel_id, "limit": limit, "echo_seconds": echo_wait_seconds,
        "action_seconds": action_wait_seconds}).all()
    applied = matched = stored = expired = 0
    for r in rows:
        if r.kind == PendingKind.ECHO:
            if r.found:
                matched += 1
            else:
                channel = WebhookChannel(r.channel_id, r.workspace_id, "")
                stored += _store_message(session, channel, _echo_message(r.wa_message_id,
                                                                         r.payload))
        elif r.found:
            p = r.payload
            action = MessageAction(r.kind, r.wa_message_id, r.action_key, r.occurred_at,
                                   reactor=p.get("reactor"), emoji=p.get("emoji") or "",
                                   body=p.get("body"), content=p.get("content"))
            applied += _apply_action(session, r.channel_id, action, wait=False) == "applied"
        else:
            expired += 1
    if rows:
        session.execute(text(q.DELETE_PENDING), {"ids": [r.id for r in rows]})
    if stored or expired:
        log.info("webhook_pending_expired", echoes_stored=stored, actions_expired=expired)
    return PendingResult(applied=applied, echoes_matched=matched, echoes_stored=stored,
                         expired=expired)


async def apply_status_backlog_async(engine: AsyncEngine) -> BacklogResult:
    """`apply_status_backlog` in its own transaction, for an asyncio scheduler
    (the daemon's maintenance jobs)."""
    async with AsyncSession(engine) as session, session.begin():
        return await session.run_sync(lambda s: apply_status_backlog(s))

