"""Whapi webhook bodies -> typed events: pure, no I/O.

One table (`ROUTES`) maps each key of Whapi's envelope (`WebhookPayload` in
its OpenAPI description 1.8.7) to the function that reads it; each entry of
each array becomes one typed event, or a named count of what was ignored,
or a reason the body goes to the dead letters. `outbox.webhooks` applies
the events; nothing here touches the database.

What each kind becomes (shared/WHAPI.md "Webhooks", DESIGN.md "Every
webhook event is routed or counted"):

* `messages` (post, put = offline backlog):
  - someone else's content message (text, image, ..., link_preview, poll,
    reply, ...) -> `StoredMessage` counting as unread, reopening the chat;
  - `type: "action"`: reaction, edit/edited, delete -> `MessageAction` on
    its target (never a message of its own); vote, pin, unpin, ephemeral,
    comment, event_response -> ignored, counted as `action.<type>`;
  - `call`, `system` -> `StoredMessage` of that type: in the thread, not
    unread, not in the chat list's preview;
  - `from_me` typed on the phone (source other than `api`) -> an outbound
    `StoredMessage`, so the conversation is complete;
  - `from_me` with source `api` -> `Echo` (our own send coming back);
  - newsletters and status broadcasts -> ignored, counted.
* `messages_updates` (patch): a changed text -> `MessageAction` edit.
* `messages_removed` (delete): ids -> `MessageAction` delete.
* `statuses` (post, put): `StatusUpdate`; `deleted` -> `MessageAction` delete.
* `chats` (post): the chat exists -> `ChatSeen`; `chats`, `chats_updates`,
  `chats_removed`: archive state -> `ChatArchive`.
* `health`, `qr` (channel) and `user` (users post/delete): `SessionChange`.
* anything else: ignored, counted under its key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from outbox.errors import InvalidPhone, MalformedWebhook, NotAConversation
from outbox.phone import Recipient, normalize_recipient
from outbox.states import Direction, MessageStatus

#: Forward-only order of delivery statuses. `failed` only moves a message
#: not yet delivered (a late failure never undoes a delivery; a delivery
#: after a failure is the stronger fact). `deleted` is not a delivery
#: status: it marks the message deleted (MessageAction) and leaves its
#: status alone.
STATUS_ORDER: Final = (MessageStatus.PENDING, MessageStatus.SENT, MessageStatus.FAILED,
                       MessageStatus.DELIVERED, MessageStatus.READ, MessageStatus.PLAYED)
DELETED_STATUS: Final = MessageStatus.DELETED
MAX_WA_ID_LENGTH: Final = 200
MAX_PREVIEW_LENGTH: Final = 100
MAX_NAME_LENGTH: Final = 200
#: Actions that change a message; the others are counted and ignored.
APPLIED_ACTIONS: Final = {"reaction": "reaction", "edit": "edit", "edited": "edit",
                          "delete": "delete"}
#: Whapi `health.status.text` values: the session is usable, or it is not
#: and sending would only collect 401s.
SESSION_UP: Final = frozenset({"AUTH"})
SESSION_DOWN: Final = frozenset({"QR", "ERROR"})
#: Where a message's readable text lives, per content object, in order.
_TEXT_FIELDS: Final = ("body", "caption", "title", "name")
# Unix timestamps outside this window are garbage, not dates.
_MIN_TS, _MAX_TS = 946_684_800, 4_102_444_800  # 2000-01-01 .. 2100-01-01


# --- events ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    wa_message_id: str
    status: MessageStatus
    at: datetime | None
    error: str | None = None  # failed: Whapi's `errors`, as "code: message"


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message that belongs in a conversation's thread."""

    wa_message_id: str
    chat: Recipient
    contact_name: str | None
    direction: Direction  # outbound: typed on the phone
    type: str
    status: MessageStatus
    body: str | None
    preview: str
    payload: dict[str, Any]
    sent_at: datetime | None
    counts_unread: bool  # someone wrote to us: unread +1, the chat reopens
    in_listing: bool  # moves the chat's last message (not calls, not system notes)


@dataclass(frozen=True, slots=True)
class Echo:
    """A `from_me` message sent through the API: usually our own send,
    stored by the dispatcher with this id. If no message ever gets the id,
    someone else used the channel's token, and `message` is stored."""

    message: StoredMessage


@dataclass(frozen=True, slots=True)
class MessageAction:
    """A reaction, edit or delete of the message `target`."""

    kind: str  # reaction | edit | delete
    target: str
    key: str  # what makes a replay a replay (the action's own id, ...)
    at: datetime | None
    reactor: str | None = None  # reaction: who ("me" for the channel itself)
    emoji: str = ""  # reaction: "" removes it
    body: str | None = None  # edit: the new text
    content: dict[str, Any] | None = None  # edit: the new content object

    def as_json(self) -> dict[str, Any]:
        return {"reactor": self.reactor, "emoji": self.emoji, "body": self.body,
                "content": self.content}


@dataclass(frozen=True, slots=True)
class ChatArchive:
    wa_chat_id: str
    archived: bool


@dataclass(frozen=True, slots=True)
class ChatSeen:
    """A chat Whapi reports (chats.post): ensured to exist, with its contact."""

    chat: Recipient
    name: str | None


@dataclass(frozen=True, slots=True)
class SessionChange:
    up: bool  # AUTH / login: True; logged out, QR, ERROR: False
    reason: str


@dataclass(slots=True)
class ParsedWebhook:
    statuses: list[StatusUpdate] = field(default_factory=list)
    messages: list[StoredMessage] = field(default_factory=list)
    echoes: list[Echo] = field(default_factory=list)
    actions: list[MessageAction] = field(default_factory=list)
    chats: list[ChatArchive] = field(default_factory=list)
    chats_seen: list[ChatSeen] = field(default_factory=list)
    sessions: list[SessionChange] = field(default_factory=list)
    ignored: Counter[str] = field(default_factory=Counter)  # by kind: explicitly not used
    unusable: list[str] = field(default_factory=list)  # reasons: the body goes to dead letters


@dataclass(frozen=True, slots=True)
class EventName:
    """Whapi's `event: {type, event}`, or the webhook URL's (modes path/method)."""

    type: str | None = None
    method: str | None = None


# --- parse ----------------------------------------------------------------------


def parse_webhook(payload: Any, *, hint: EventName | None = None) -> ParsedWebhook:
    """Events from one webhook body (an object, or a list of objects).
    Raises `MalformedWebhook` only when it is neither; everything inside is
    routed, counted as ignored, or listed as unusable."""
    bodies = payload if isinstance(payload, list) else [payload]
    if not all(isinstance(b, dict) for b in bodies):
        raise MalformedWebhook("webhook body must be a JSON object or a list of objects")
    out = ParsedWebhook()
    for body in bodies:
        event = event_name(body, hint)
        for key, value in body.items():
            route = ROUTES.get(key)
            if route is None:
                out.ignored[key] += 1
            else:
                route(value, event, out)
    return out


def event_name(body: Mapping[str, Any], hint: EventName | None) -> EventName:
    """The body's own `event` wins; the URL's (path and method modes) fills gaps."""
    event = body.get("event")
    fallback = hint or EventName()
    if not isinstance(event, dict):
        return fallback
    kind, method = event.get("type"), event.get("event")
    return EventName(kind if isinstance(kind, str) else fallback.type,
                     method.lower() if isinstance(method, str) else fallback.method)


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


def _statuses(value: Any, event: EventName, out: ParsedWebhook) -> None:
    for entry in _entries(value, "statuses", out):
        wa_id = _wa_id(entry.get("id"))
        status = entry.get("status")
        at = parse_timestamp(entry.get("timestamp"))
        if wa_id is None:
            out.unusable.append("status without an id")
        elif status == DELETED_STATUS:
            out.actions.append(MessageAction("delete", wa_id, "status", at))
        elif status in STATUS_ORDER:
            error = (_status_error(entry.get("errors")) if status == MessageStatus.FAILED
                     else None)
            out.statuses.append(StatusUpdate(wa_id, MessageStatus(status), at, error))
        else:
            out.unusable.append(f"unknown status {str(status)[:40]!r}")


def _status_error(errors: Any) -> str | None:
    """Whapi's `errors` (its Error schema: code, message, details) in one line."""
    if not isinstance(errors, list):
        return None
    parts = []
    for e in errors:
        if isinstance(e, dict):
            text = ": ".join(str(e[k]) for k in ("code", "message", "details")
                             if isinstance(e.get(k), str | int) and not isinstance(e[k], bool))
            if text:
                parts.append(_clean(text))
    return "; ".join(parts)[:500] or None


def _messages(value: Any, event: EventName, out: ParsedWebhook) -> None:
    for entry in _entries(value, "messages", out):
        _message(entry, out)


def _message(entry: Mapping[str, Any], out: ParsedWebhook) -> None:
    wa_id = _wa_id(entry.get("id"))
    raw_kind = entry.get("type")
    kind = (_clean(raw_kind)[:50] or "unknown") if isinstance(raw_kind, str) else "unknown"
    from_me = entry.get("from_me")
    if wa_id is None or not isinstance(from_me, bool):
        out.unusable.append("message without an id or from_me")
        return
    if kind == "action":
        _action(wa_id, entry, from_me, out)
        return
    chat = _chat(entry.get("chat_id"), out)
    if chat is None:
        return
    sent_at = parse_timestamp(entry.get("timestamp"))
    body = _text_of(kind, entry)
    name = entry.get("chat_name") if chat.is_group else entry.get("from_name")
    chat_event = kind in ("call", "system")
    if from_me:
        status = entry.get("status")
        message = StoredMessage(
            wa_message_id=wa_id, chat=chat, contact_name=None, direction=Direction.OUTBOUND,
            type=kind, status=MessageStatus(status) if status in STATUS_ORDER
            else MessageStatus.SENT, body=body,
            preview=_preview(kind, body), payload=_strip_nul(entry), sent_at=sent_at,
            counts_unread=False, in_listing=not chat_event)
        if entry.get("source") == "api":
            out.echoes.append(Echo(message))
        else:
            out.messages.append(message)
        return
    out.messages.append(StoredMessage(
        wa_message_id=wa_id, chat=chat,
        contact_name=(_clean(name)[:MAX_NAME_LENGTH] or None) if isinstance(name, str) else None,
        direction=Direction.INBOUND, type=kind, status=MessageStatus.DELIVERED, body=body,
        preview=_preview(kind, body), payload=_strip_nul(entry), sent_at=sent_at,
        counts_unread=not chat_event, in_listing=not chat_event))


def _action(wa_id: str, entry: Mapping[str, Any], from_me: bool, out: ParsedWebhook) -> None:
    action = entry.get("action")
    if not isinstance(action, dict) or not isinstance(action.get("type"), str):
        out.unusable.append("action without a type")
        return
    kind = APPLIED_ACTIONS.get(action["type"])
    if kind is None:
        out.ignored[f"action.{_clean(action['type'])[:40]}"] += 1
        return
    target = _wa_id(action.get("target"))
    if target is None:
        out.unusable.append(f"{kind} action without a target")
        return
    at = parse_timestamp(entry.get("timestamp"))
    if kind == "reaction":
        reactor = "me" if from_me else _reactor(entry)
        emoji = action.get("emoji")
        out.actions.append(MessageAction(
            "reaction", target, reactor, at, reactor=reactor,
            emoji=_clean(emoji)[:32] if isinstance(emoji, str) else ""))
    elif kind == "edit":
        content = action.get("edited_content")
        content = _strip_nul(content) if isinstance(content, dict) else {}
        body = _first_text(content)
        out.actions.append(MessageAction("edit", target, wa_id, at, body=body, content=content))
    else:
        out.actions.append(MessageAction("delete", target, wa_id, at))


def _message_updates(value: Any, event: EventName, out: ParsedWebhook) -> None:
    for entry in _entries(value, "messages_updates", out):
        wa_id = _wa_id(entry.get("id"))
        before, after = entry.get("before_update"), entry.get("after_update")
        if wa_id is None or not isinstance(after, dict):
            out.unusable.append("message update without an id or after_update")
            continue
        kind = after["type"] if isinstance(after.get("type"), str) else "text"
        body = _text_of(kind, after)
        old = _text_of(kind, before) if isinstance(before, dict) else None
        if body == old:
            out.ignored["messages_updates.unchanged_text"] += 1
            continue
        trigger = entry.get("trigger")
        trigger_id = _wa_id(trigger.get("id")) if isinstance(trigger, dict) else None
        at = parse_timestamp(trigger.get("timestamp")) if isinstance(trigger, dict) else None
        content = after.get(kind)
        out.actions.append(MessageAction(
            "edit", wa_id, trigger_id or f"patch:{body}"[:MAX_WA_ID_LENGTH], at, body=body,
            content=_strip_nul(content) if isinstance(content, dict) else {}))


def _messages_removed(value: Any, event: EventName, out: ParsedWebhook) -> None:
    for entry in _list(value, "messages_removed", out):
        wa_id = _wa_id(entry)
        if wa_id is None:
            out.unusable.append("removed message id is not a string")
        else:
            out.actions.append(MessageAction("delete", wa_id, "removed", None))


def _chats(value: Any, event: EventName, out: ParsedWebhook) -> None:
    for entry in _entries(value, "chats", out):
        recipient = _chat(entry.get("id"), out)
        if recipient is None:
            continue
        name = entry.get("name")
        out.chats_seen.append(ChatSeen(
            recipient, (_clean(name)[:MAX_NAME_LENGTH] or None) if isinstance(name, str) else None))
        _archive(entry, out, key="chats")


def _chats_updates(value: Any, event: EventName, out: ParsedWebhook) -> None:
    for entry in _entries(value, "chats_updates", out):
        after = entry.get("after_update")
        if isinstance(after, dict):
            _archive(after, out, key="chats_updates")
        else:
            out.unusable.append("chat update without after_update")


def _archive(chat: Mapping[str, Any], out: ParsedWebhook, *, key: str) -> None:
    archived = chat.get("archive")
    recipient = _chat(chat.get("id"), out)
    if recipient is None:
        return
    if isinstance(archived, bool):
        out.chats.append(ChatArchive(recipient.wa_chat_id, archived))
    else:
        out.ignored[f"{key}.no_archive_state"] += 1


def _chats_removed(value: Any, event: EventName, out: ParsedWebhook) -> None:
    # A chat deleted on the phone: our record stays, out of the inbox's way.
    for entry in _list(value, "chats_removed", out):
        recipient = _chat(entry, out)
        if recipient is not None:
            out.chats.append(ChatArchive(recipient.wa_chat_id, True))


def _health(value: Any, event: EventName, out: ParsedWebhook) -> None:
    status = value.get("status") if isinstance(value, dict) else None
    text = status.get("text") if isinstance(status, dict) else None
    if not isinstance(text, str):
        out.unusable.append("health without status.text")
    elif text in SESSION_UP:
        out.sessions.append(SessionChange(True, f"Whapi health: {text}"))
    elif text in SESSION_DOWN:
        out.sessions.append(SessionChange(False, f"WhatsApp session not usable (health {text})"))
    else:
        out.ignored[f"health.{_clean(text)[:20]}"] += 1


def _qr(value: Any, event: EventName, out: ParsedWebhook) -> None:
    out.sessions.append(SessionChange(False, "WhatsApp session needs a QR-code login"))


def _user(value: Any, event: EventName, out: ParsedWebhook) -> None:
    if event.type not in (None, "users"):
        out.ignored[f"user.{event.type}"] += 1
    elif event.method == "delete":
        out.sessions.append(SessionChange(False, "WhatsApp session logged out"))
    elif event.method == "post":
        out.sessions.append(SessionChange(True, "WhatsApp session logged in"))
    else:
        out.unusable.append("users event without post or delete")


def _envelope(value: Any, event: EventName, out: ParsedWebhook) -> None:
    """Keys that describe the body rather than carry events."""


Route = Callable[[Any, EventName, ParsedWebhook], None]
#: Every envelope key we act on (others are counted by name and ignored).
ROUTES: Final[Mapping[str, Route]] = {
    "event": _envelope,
    "channel_id": _envelope,
    "statuses": _statuses,
    "messages": _messages,
    "messages_updates": _message_updates,
    "messages_removed": _messages_removed,
    "chats": _chats,
    "chats_updates": _chats_updates,
    "chats_removed": _chats_removed,
    "health": _health,
    "qr": _qr,
    "user": _user,
}


# --- small readers -----------------------------------------------------------------


def _entries(value: Any, key: str, out: ParsedWebhook) -> list[Mapping[str, Any]]:
    items = _list(value, key, out)
    objects: list[Mapping[str, Any]] = [i for i in items if isinstance(i, dict)]
    if len(objects) < len(items):
        out.unusable.append(f"{len(items) - len(objects)} {key} entries are not objects")
    return objects


def _list(value: Any, key: str, out: ParsedWebhook) -> list[Any]:
    if isinstance(value, list):
        return value
    out.unusable.append(f"{key} is not a list")
    return []


def _chat(raw: Any, out: ParsedWebhook) -> Recipient | None:
    if not isinstance(raw, str):
        out.unusable.append("chat id is missing")
        return None
    try:
        return normalize_recipient(raw)
    except NotAConversation as exc:
        out.ignored[f"not_a_conversation.{exc.kind}"] += 1
    except InvalidPhone as exc:
        out.unusable.append(str(exc)[:200])
    return None


def _reactor(entry: Mapping[str, Any]) -> str:
    sender = entry.get("from")
    if isinstance(sender, str) and sender:
        return _clean(sender)[:MAX_WA_ID_LENGTH]
    chat = entry.get("chat_id")
    return _clean(chat)[:MAX_WA_ID_LENGTH] if isinstance(chat, str) else "unknown"


def _text_of(kind: str, message: Mapping[str, Any]) -> str | None:
    content = message.get(kind)
    if not isinstance(content, dict):
        return None
    if kind == "reply":  # {"type": "buttons_reply", "buttons_reply": {"title": ...}}
        chosen = content.get(content.get("type")) if isinstance(content.get("type"), str) else None
        return _first_text(chosen) if isinstance(chosen, dict) else None
    return _first_text(content)


def _first_text(content: Mapping[str, Any]) -> str | None:
    for name in _TEXT_FIELDS:
        value = content.get(name)
        if isinstance(value, str) and _clean(value):
            return _clean(value)
    return None


def _preview(kind: str, body: str | None) -> str:
    return (body or f"[{kind}]")[:MAX_PREVIEW_LENGTH]


def _wa_id(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    wa_id = value.strip()
    if not wa_id or len(wa_id) > MAX_WA_ID_LENGTH or "\x00" in wa_id:
        return None
    return wa_id


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
