"""Events on demand: control endpoints that make the simulator post any webhook
Whapi sends, in Whapi's shapes (outbox.providers.simulator.payloads), through the
channel's webhook configuration (outbox.providers.simulator.webhooks: mode,
subscriptions, retries).

Every endpoint takes a JSON body with, besides its own fields:

    token           the channel (null: the default webhook scope, channel id
                    "SIMULATOR"); in strict mode an unknown token is a 400
    wait            true: answer only when every delivery got its 200 (or
                    wait_timeout_s passed, default 10); false (default): at once

and answers 200 with

    {"body": <the JSON body posted>, "event": {"type", "method"},
     "message_ids": [...], "deliveries": [<delivery ids, see /_sim/webhooks/log>],
     "delivered": null | true | false}

`delivered` is null without `wait`; true only if at least one webhook got the
body and every one answered 200 in time. Nothing subscribed → no deliveries.

    POST /_sim/inbound
        One message, or several with "messages": [<message>, ...] (one body).
        <message>: type (schema MessageType, default text), text (body or
        caption), content (the type's object, replacing the generated one),
        chat_id | phone (+ country_rules, default true: a phone becomes
        Whapi's id, 52… → 521…), from, from_name, from_me (default false;
        true = typed on the phone, source "mobile"), source, id, timestamp,
        context, quoted (a message id), chat_name, status.
        method: "post" (default) or "put" (offline backlog).
        Groups: chat_id "…@g.us" with from/from_name; "…@lid" ids pass as given.
    POST /_sim/action
        A `type: "action"` message: target (message id), action (reaction,
        edit, edited, delete, vote, pin, unpin, ephemeral, comment,
        event_response), emoji ("" removes a reaction), text or edited_content
        (+ edited_type) for edits, votes, ephemeral, comment, event_response,
        chat_id | phone (default: the target's chat), from, from_name, from_me,
        method post|put.
    POST /_sim/messages_updates
        messages.patch: id (the message), text or after (its new content),
        changes (default [<type>]), trigger (default true: the edit action
        that caused it), chat_id | phone for an id the simulator does not know.
    POST /_sim/messages_removed
        messages.delete: ids (or id); all_in_chat: a chat id → also
        messages_removed_all.
    POST /_sim/statuses
        statuses for message ids: ids (or id), status (schema StatusEnum),
        method post|put, errors (default for failed: one Whapi error),
        recipient_id (default: the message's chat), viewer_id, code.
    POST /_sim/calls
        calls.post: chat_id | phone, from, status (initiated, ringing, missed,
        canceled, answered; default ringing), video, group, offline, id.
    POST /_sim/chats
        method post|put (schema Chat), patch (chats_updates: before_update,
        after_update, changes) or delete (chats_removed): chat_id | phone,
        archive, name, unread, pin, mute; before (patch: fields of
        before_update; default: the given booleans negated).
    POST /_sim/channel
        channel.post health: status (NOT_INIT, INIT, LAUNCH, QR, AUTH, ERROR,
        SYNC_ERROR). Requires token; the channel takes that state, so sends
        answer 401 until it is AUTH again.
    POST /_sim/users
        method post (login: the channel becomes AUTH) or delete (logout: QR,
        sends answer 401). Requires token. Body: {"user": {"id", "name"}}.
    POST /_sim/raw
        type, method, and body (any JSON, posted as it is: no envelope) or
        raw (a string posted byte for byte). For malformed-payload tests.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol

from aiohttp import web

from outbox.providers.simulator.channels import Channel, ChannelRegistry
from outbox.providers.simulator.chat_ids import digits_of, whapi_chat_id
from outbox.providers.simulator.http import json_response, read_json
from outbox.providers.simulator.payloads import (
    ACTION_TYPES,
    CALL_STATUSES,
    EVENT_METHODS,
    HEALTH_CODES,
    MESSAGE_TYPES,
    STATUS_CODES,
    action_message,
    call_event,
    chat_object,
    default_content,
    health_object,
    message_object,
    message_update,
    new_message_id,
    status_entry,
    user_object,
)
from outbox.providers.simulator.webhooks import (
    FAILED_ERRORS,
    Delivery,
    WebhookSender,
    wait_delivered,
)

__all__ = ["InjectError", "MessageStore", "install_inject"]

DEFAULT_PHONE: Final = "15550100200"  # the contact of 1:1 chats when none is given
DEFAULT_GROUP_MEMBER: Final = "15550100300"
DEFAULT_CONTACT_NAME: Final = "Simulated Contact"
MAX_WAIT_S: Final = 120.0
DEFAULT_WAIT_S: Final = 10.0
COMMON_FIELDS: Final = frozenset({"token", "wait", "wait_timeout_s"})


class InjectError(ValueError):
    """A control body that makes no sense (400 with this message)."""


class _HasMessages(Protocol):
    messages: dict[str, dict[str, Any]]
    owners: dict[str, str | None]
    media_ids: set[str]


class MessageStore:
    """What the injectors need from the simulator's state: messages by id.

    Reads the state's attributes on every call: a reset replaces them."""

    def __init__(self, state: _HasMessages) -> None:
        self._state = state

    @property
    def messages(self) -> dict[str, dict[str, Any]]:
        return self._state.messages

    def get(self, message_id: str) -> dict[str, Any] | None:
        return self._state.messages.get(message_id)

    def put(self, token: str | None, message: dict[str, Any]) -> None:
        state = self._state
        state.messages[message["id"]] = message
        state.owners[message["id"]] = token
        content = message.get(message["type"])
        if isinstance(content, dict) and isinstance(content.get("id"), str):
            state.media_ids.add(content["id"])


def _only(body: Mapping[str, Any], allowed: set[str] | frozenset[str]) -> None:
    unknown = set(body) - allowed - COMMON_FIELDS
    if unknown:
        raise InjectError(f"unknown field(s): {', '.join(sorted(unknown))}")


def _str(body: Mapping[str, Any], name: str, default: str | None = None) -> str | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, str):
        raise InjectError(f"{name} must be a string")
    return value


def _bool(body: Mapping[str, Any], name: str, default: bool | None = None) -> bool | None:
    value = body.get(name, default)
    if value is not None and not isinstance(value, bool):
        raise InjectError(f"{name} must be true or false")
    return value


def _method(body: Mapping[str, Any], allowed: tuple[str, ...], default: str) -> str:
    method = body.get("method", default)
    if method not in allowed:
        raise InjectError(f"method must be one of {', '.join(allowed)}")
    return str(method)


def _ids(body: Mapping[str, Any]) -> list[str]:
    ids = body.get("ids", [body["id"]] if "id" in body else None)
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise InjectError("ids must be a non-empty list of message ids (or give id)")
    return ids


def _timestamp(body: Mapping[str, Any]) -> int:
    at = body.get("timestamp", int(time.time()))
    if isinstance(at, bool) or not isinstance(at, int):
        raise InjectError("timestamp must be an integer (seconds)")
    return at


def _chat_id(body: Mapping[str, Any], default: str | None = None) -> str:
    chat_id, phone = _str(body, "chat_id"), _str(body, "phone")
    if chat_id:
        return chat_id
    if phone:
        return whapi_chat_id(phone, country_rules=bool(_bool(body, "country_rules", True)))
    return default or whapi_chat_id(DEFAULT_PHONE)


class _Injector:
    def __init__(self, store: MessageStore, registry: ChannelRegistry,
                 sender: WebhookSender) -> None:
        self.store, self.registry, self.sender = store, registry, sender

    # -- plumbing -------------------------------------------------------------

    def _channel(self, body: Mapping[str, Any], *, required: bool = False
                 ) -> tuple[str | None, Channel | None]:
        token = _str(body, "token")
        if not token:
            if required:
                raise InjectError("token is required here (the channel whose state changes)")
            return None, None
        channel = self.registry.resolve(token)
        if channel is None:
            raise InjectError("unknown token: register it with POST /_sim/channels")
        return token, channel

    async def _answer(self, body: Mapping[str, Any], posted: Any, event_type: str, method: str,
                      deliveries: list[Delivery], message_ids: list[str]) -> web.Response:
        delivered: bool | None = None
        if _bool(body, "wait", False):
            timeout = body.get("wait_timeout_s", DEFAULT_WAIT_S)
            if (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                    or math.isnan(timeout) or not 0 <= timeout <= MAX_WAIT_S):
                raise InjectError(f"wait_timeout_s must be 0 to {MAX_WAIT_S:g}")
            delivered = await wait_delivered(deliveries, float(timeout))
        return json_response({"body": posted, "event": {"type": event_type, "method": method},
                              "message_ids": message_ids,
                              "deliveries": [d.id for d in deliveries],
                              "delivered": delivered})

    async def _emit(self, body: Mapping[str, Any], token: str | None, event_type: str,
                    method: str, payload: Mapping[str, Any], message_ids: list[str]
                    ) -> web.Response:
        posted, deliveries = self.sender.emit(token, event_type, method, payload)
        return await self._answer(body, posted, event_type, method, deliveries, message_ids)

    def _sender_of(self, body: Mapping[str, Any], chat_id: str, from_me: bool,
                   channel: Channel | None) -> tuple[str, str]:
        if from_me:
            default = (channel.phone, channel.name) if channel else ("15550100000", "Simulator")
        elif chat_id.endswith("@g.us"):
            default = (DEFAULT_GROUP_MEMBER, "Group Member")
        else:
            default = (digits_of(chat_id), DEFAULT_CONTACT_NAME)
        return (_str(body, "from", default[0]) or default[0],
                _str(body, "from_name", default[1]) or default[1])

    # -- messages -------------------------------------------------------------

    def _inbound_message(self, spec: Any, token: str | None, channel: Channel | None
                         ) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise InjectError("each message must be an object")
        _only(spec, {"type", "text", "content", "chat_id", "phone", "country_rules", "from",
                     "from_name", "from_me", "source", "id", "timestamp", "context", "quoted",
                     "chat_name", "status", "subtype", "method", "messages"})
        kind = spec.get("type", "text")
        if kind not in MESSAGE_TYPES:
            raise InjectError(f"unknown message type {kind!r} (schema MessageType)")
        at = _timestamp(spec)
        chat_id = _chat_id(spec)
        from_me = bool(_bool(spec, "from_me", False))
        sender, sender_name = self._sender_of(spec, chat_id, from_me, channel)
        content = spec.get("content")
        if content is not None and not isinstance(content, dict):
            raise InjectError("content must be an object")
        if content is None:
            content = default_content(kind, text=_str(spec, "text"), at=at, phone=sender)
        context = spec.get("context")
        if context is not None and not isinstance(context, dict):
            raise InjectError("context must be an object")
        quoted = _str(spec, "quoted")
        if quoted:
            context = {**(context or {}), "quoted_id": quoted}
            target = self.store.get(quoted)
            if target is not None:
                context["quoted_type"] = target["type"]
                context["quoted_author"] = target.get("from", "")
                if isinstance(target.get(target["type"]), dict):
                    context["quoted_content"] = target[target["type"]]
        status = _str(spec, "status")
        if status is not None and status not in STATUS_CODES:
            raise InjectError("status must be one of " + ", ".join(STATUS_CODES))
        message = message_object(
            message_id=_str(spec, "id") or new_message_id(), kind=kind, chat_id=chat_id, at=at,
            from_me=from_me, source=_str(spec, "source") or ("mobile"),
            sender=sender, sender_name=sender_name, content=content,
            status=status, context=context, chat_name=_str(spec, "chat_name"),
            subtype=_str(spec, "subtype", "e2e_notification" if kind == "system" else None))
        self.store.put(token, message)
        return message

    async def inbound(self, body: dict[str, Any]) -> web.Response:
        token, channel = self._channel(body)
        method = _method(body, ("post", "put"), "post")
        specs = body.get("messages")
        if specs is None:
            specs = [body]
        elif not isinstance(specs, list) or not specs:
            raise InjectError("messages must be a non-empty list")
        else:
            _only(body, {"messages", "method"})
        messages = [self._inbound_message(spec, token, channel) for spec in specs]
        return await self._emit(body, token, "messages", method, {"messages": messages},
                                [m["id"] for m in messages])

    def _action_object(self, body: Mapping[str, Any], kind: str, target_id: str,
                       target: Mapping[str, Any] | None, sender: str, at: int
                       ) -> dict[str, Any]:
        action: dict[str, Any] = {"target": target_id, "type": kind}
        text = _str(body, "text")
        if kind == "reaction":
            action["emoji"] = _str(body, "emoji", "👍")
        elif kind in ("edit", "edited"):
            edited = body.get("edited_content")
            if edited is not None and not isinstance(edited, dict):
                raise InjectError("edited_content must be an object")
            edited_type = _str(body, "edited_type") or (target["type"] if target else "text")
            if edited is None:
                edited = default_content(edited_type, text=text or "(edited)", at=at) or {}
            action["edited_type"] = edited_type
            action["edited_content"] = edited
        elif kind == "vote":
            votes = body.get("votes")
            if votes is None:
                poll = target.get("poll") if target else None
                options = poll.get("options") if isinstance(poll, dict) else None
                votes = options[:1] if isinstance(options, list) else ["Morning"]
            if not isinstance(votes, list) or not all(isinstance(v, str) for v in votes):
                raise InjectError("votes must be a list of strings")
            action["votes"] = votes
        elif kind == "ephemeral":
            seconds = body.get("ephemeral", 604_800)
            if isinstance(seconds, bool) or not isinstance(seconds, int):
                raise InjectError("ephemeral must be an integer (seconds)")
            action["ephemeral"] = seconds
        elif kind == "comment":
            action["comment"] = _str(body, "comment") or text or "Nice"
        elif kind == "event_response":
            response = body.get("event_response") or {
                "participant": sender, "response": "GOING", "timestamp": at}
            if not isinstance(response, dict):
                raise InjectError("event_response must be an object")
            action["event_response"] = response
        return action

    async def action(self, body: dict[str, Any]) -> web.Response:
        _only(body, {"target", "action", "emoji", "text", "edited_type", "edited_content",
                     "votes", "ephemeral", "comment", "event_response", "chat_id", "phone",
                     "country_rules", "from", "from_name", "from_me", "source", "id",
                     "timestamp", "method"})
        token, channel = self._channel(body)
        method = _method(body, ("post", "put"), "post")
        target_id = _str(body, "target")
        if not target_id:
            raise InjectError("target (a message id) is required")
        kind = body.get("action")
        if kind not in ACTION_TYPES:
            raise InjectError("action must be one of " + ", ".join(sorted(ACTION_TYPES)))
        target = self.store.get(target_id)
        at = _timestamp(body)
        chat_id = _chat_id(body, target["chat_id"] if target else None)
        from_me = bool(_bool(body, "from_me", False))
        sender, sender_name = self._sender_of(body, chat_id, from_me, channel)
        message = action_message(
            message_id=_str(body, "id") or new_message_id(), chat_id=chat_id, at=at,
            from_me=from_me, source=_str(body, "source") or "mobile", sender=sender,
            sender_name=sender_name,
            action=self._action_object(body, str(kind), target_id, target, sender, at))
        if target is not None and kind in ("edit", "edited"):
            target[target["type"]] = message["action"]["edited_content"]
        return await self._emit(body, token, "messages", method, {"messages": [message]},
                                [message["id"]])

    async def messages_updates(self, body: dict[str, Any]) -> web.Response:
        _only(body, {"id", "text", "after", "changes", "trigger", "chat_id", "phone",
                     "country_rules", "timestamp"})
        token, channel = self._channel(body)
        message_id = _str(body, "id")
        if not message_id:
            raise InjectError("id (the updated message) is required")
        at = _timestamp(body)
        before = self.store.get(message_id)
        if before is None:
            chat_id = _chat_id(body)
            sender, name = self._sender_of({}, chat_id, False, channel)
            before = message_object(
                message_id=message_id, kind="text", chat_id=chat_id, at=at - 60,
                from_me=False, source="mobile", sender=sender, sender_name=name,
                content={"body": "Original text"})
        kind = before["type"]
        after = body.get("after")
        if after is not None and not isinstance(after, dict):
            raise InjectError("after must be an object (the message's new content)")
        if after is None:
            after = default_content(kind, text=_str(body, "text") or "Edited text", at=at) or {}
        changes = body.get("changes", [kind])
        if not isinstance(changes, list) or not all(isinstance(c, str) for c in changes):
            raise InjectError("changes must be a list of strings")
        trigger = None
        if _bool(body, "trigger", True):
            trigger = action_message(
                message_id=new_message_id(), chat_id=before["chat_id"], at=at,
                from_me=before["from_me"], source=before.get("source", "mobile"),
                sender=before.get("from"), sender_name=before.get("from_name"),
                action={"target": message_id, "type": "edit", "edited_type": kind,
                        "edited_content": after})
        update = message_update(before=before, after_content=after, changes=changes,
                                trigger=trigger)
        if message_id in self.store.messages:
            self.store.messages[message_id] = copy.deepcopy(update["after_update"])
        return await self._emit(body, token, "messages", "patch",
                                {"messages_updates": [update]}, [message_id])

    async def messages_removed(self, body: dict[str, Any]) -> web.Response:
        _only(body, {"ids", "id", "all_in_chat"})
        token, _ = self._channel(body)
        ids = _ids(body)
        payload: dict[str, Any] = {"messages_removed": ids}
        chat = _str(body, "all_in_chat")
        if chat:
            payload["messages_removed_all"] = chat
        return await self._emit(body, token, "messages", "delete", payload, ids)

    async def statuses(self, body: dict[str, Any]) -> web.Response:
        _only(body, {"ids", "id", "status", "method", "errors", "recipient_id", "viewer_id",
                     "code", "timestamp"})
        token, _ = self._channel(body)
        method = _method(body, ("post", "put"), "post")
        status = body.get("status")
        if status not in STATUS_CODES:
            raise InjectError("status must be one of " + ", ".join(STATUS_CODES))
        errors = body.get("errors", list(FAILED_ERRORS) if status == "failed" else None)
        if errors is not None and (not isinstance(errors, list)
                                   or not all(isinstance(e, dict) for e in errors)):
            raise InjectError("errors must be a list of {code, message} objects")
        code = body.get("code")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
            raise InjectError("code must be an integer")
        at = _timestamp(body)
        entries = []
        for message_id in _ids(body):
            known = self.store.get(message_id)
            if known is not None:
                known["status"] = status
            entries.append(status_entry(
                message_id=message_id, status=str(status),
                recipient_id=_str(body, "recipient_id") or (known["chat_id"] if known else None),
                viewer_id=_str(body, "viewer_id"), at=at, errors=errors, code=code))
        return await self._emit(body, token, "statuses", method, {"statuses": entries},
                                [e["id"] for e in entries])

    # -- calls, chats, channel, users, raw ------------------------------------

    async def calls(self, body: dict[str, Any]) -> web.Response:
        _only(body, {"chat_id", "phone", "country_rules", "from", "status", "video", "group",
                     "offline", "id", "timestamp"})
        token, _ = self._channel(body)
        chat_id = _chat_id(body)
        status = body.get("status", "ringing")
        if status not in CALL_STATUSES:
            raise InjectError("status must be one of " + ", ".join(CALL_STATUSES))
        caller = _str(body, "from") or (
            DEFAULT_GROUP_MEMBER if chat_id.endswith("@g.us") else chat_id)
        call = call_event(chat_id=chat_id, sender=whapi_chat_id(caller, country_rules=False),
                          status=str(status), at=_timestamp(body),
                          video=bool(_bool(body, "video", False)),
                          group=bool(_bool(body, "group", chat_id.endswith("@g.us"))),
                          offline=bool(_bool(body, "offline", False)), call_id=_str(body, "id"))
        return await self._emit(body, token, "calls", "post", {"calls": [call]}, [call["id"]])

    async def chats(self, body: dict[str, Any]) -> web.Response:
        fields = ("archive", "name", "unread", "pin", "mute")
        _only(body, {"method", "chat_id", "phone", "country_rules", "before", "timestamp",
                     *fields})
        token, _ = self._channel(body)
        method = _method(body, EVENT_METHODS, "post")
        chat_id = _chat_id(body)
        at = _timestamp(body)
        if method == "delete":
            return await self._emit(body, token, "chats", "delete",
                                    {"chats_removed": [chat_id]}, [])
        given = {k: body[k] for k in fields if k in body}
        for k in ("archive", "pin", "mute"):
            _bool(given, k)
        if "unread" in given and (isinstance(given["unread"], bool)
                                  or not isinstance(given["unread"], int)):
            raise InjectError("unread must be an integer")
        _str(given, "name")
        after = {**chat_object(chat_id=chat_id, at=at), **given}
        if method in ("post", "put"):
            return await self._emit(body, token, "chats", method, {"chats": [after]}, [])
        before_fields = body.get("before")
        if before_fields is not None and not isinstance(before_fields, dict):
            raise InjectError("before must be an object")
        if before_fields is None:
            before_fields = {k: not v for k, v in given.items() if isinstance(v, bool)}
        before = {**{k: v for k, v in after.items() if k not in given}, **before_fields}
        update = {"before_update": before, "after_update": after, "changes": list(given)}
        return await self._emit(body, token, "chats", "patch", {"chats_updates": [update]}, [])

    async def channel(self, body: dict[str, Any]) -> web.Response:
        _only(body, {"status"})
        token, channel = self._channel(body, required=True)
        assert channel is not None
        status = body.get("status")
        if status not in HEALTH_CODES:
            raise InjectError("status must be one of " + ", ".join(HEALTH_CODES))
        channel.status = str(status)
        user = user_object(phone=channel.phone, name=channel.name) if status == "AUTH" else None
        health = health_object(status_text=channel.status, channel_id=channel.channel_id,
                               started_at=channel.started_at, user=user)
        return await self._emit(body, token, "channel", "post", {"health": health}, [])

    async def users(self, body: dict[str, Any]) -> web.Response:
        _only(body, {"method"})
        token, channel = self._channel(body, required=True)
        assert channel is not None
        method = _method(body, ("post", "delete"), "post")
        channel.status = "AUTH" if method == "post" else "QR"
        user = user_object(phone=channel.phone, name=channel.name)
        return await self._emit(body, token, "users", method, {"user": user}, [])

    async def raw(self, body: dict[str, Any]) -> web.Response:
        _only(body, {"type", "method", "body", "raw"})
        token, _ = self._channel(body)
        event_type, method = _str(body, "type"), _method(body, EVENT_METHODS, "post")
        if not event_type:
            raise InjectError("type (the event type) is required")
        if ("body" in body) == ("raw" in body):
            raise InjectError("give either body (any JSON) or raw (a string)")
        if "raw" in body:
            shown = _str(body, "raw") or ""
            data = shown.encode()
        else:
            shown = body["body"]
            data = json.dumps(shown, separators=(",", ":"), ensure_ascii=False).encode()
        deliveries = self.sender.emit_raw(token, event_type, method, data, shown)
        return await self._answer(body, shown, event_type, method, deliveries, [])


def install_inject(app: web.Application, store: MessageStore, registry: ChannelRegistry,
                   sender: WebhookSender) -> None:
    injector = _Injector(store, registry, sender)

    def route(handler: Callable[[dict[str, Any]], Awaitable[web.Response]]
              ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                body = await read_json(request)
                if not isinstance(body, dict):
                    raise InjectError("body must be a JSON object")
                return await handler(body)
            except (ValueError, InjectError) as exc:
                return json_response({"error": str(exc)}, 400)
        return handle

    for path, handler in (
        ("/_sim/inbound", injector.inbound),
        ("/_sim/action", injector.action),
        ("/_sim/messages_updates", injector.messages_updates),
        ("/_sim/messages_removed", injector.messages_removed),
        ("/_sim/statuses", injector.statuses),
        ("/_sim/calls", injector.calls),
        ("/_sim/chats", injector.chats),
        ("/_sim/channel", injector.channel),
        ("/_sim/users", injector.users),
        ("/_sim/raw", injector.raw),
    ):
        app.router.add_route("POST", path, route(handler))
