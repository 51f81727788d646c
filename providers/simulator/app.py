"""A Whapi.cloud simulator: a real HTTP server speaking Whapi's API.

Users run it to try the outbox without a Whapi account; the demo, the tests
and the benchmark run against it. Where it and Whapi's published spec
(shared/WHAPI.md, OpenAPI 1.8.7) disagree, the simulator is wrong.

Whapi's API (Bearer token of a channel, Whapi-shaped bodies and errors):

    POST   /messages/{text,image,video,gif,short,audio,voice,document,sticker,
                      link_preview,location,live_location,contact,contact_list,
                      poll,interactive,carousel}
           send; 400 on a bad body, 401 for an unknown token or a logged-out
           channel, 404 "Media with specified id not found" on media endpoints
           when `media` is a media id the simulator never handed out
    POST   /messages/{id}       forward a message ({"to"}); 404 if unknown
    GET    /messages/{id}       one message (sent or injected) of this channel; 404
    PUT    /messages/{id}       mark as read: {"success": true}; 404; emits nothing;
                                recorded (GET /_sim/reads), not counted as a send
    DELETE /messages/{id}       delete: {"success": true}; 404; emits nothing
    GET    /health              the channel's health (without a token: a probe
                                answer, AUTH, so "is it up?" needs no token)
    GET|PATCH|DELETE /settings, GET /settings/events
                                webhook settings: outbox.providers.simulator.settings_api

Control API under `/_sim/`:

    GET    /_sim/sent?token=&to=&since=<seq>&limit=   accepted sends, arrival order
    GET    /_sim/reads?token=                          read receipts (PUT /messages/{id}),
                                                       arrival order
    GET    /_sim/stats                                 counters
    GET    /_sim/faults                                current fault config
    POST   /_sim/faults                                set faults for one scope
    DELETE /_sim/faults[?token=&to=]                   clear one scope (or all)
    POST   /_sim/reset                                 clear faults, records, stats,
                                                       channels, webhooks
    GET    /_sim/channels                              {"accept_any_token",
                                                        "unknown_token_status", "channels"}
    POST   /_sim/channels                              register a channel: {token?,
                                                        channel_id?, phone?, name?, status?}
                                                        (random token if none) → the channel
    PATCH  /_sim/channels                              {accept_any_token?, unknown_token_status?}
    DELETE /_sim/channels?token=                       forget one channel
    GET|POST|DELETE /_sim/webhooks, GET /_sim/webhooks/log
                                                       outbox.providers.simulator.webhooks
    POST   /_sim/{inbound,action,messages_updates,messages_removed,statuses,calls,
                  chats,channel,users,raw}             events on demand:
                                                       outbox.providers.simulator.inject

Tokens (outbox.providers.simulator.channels): strict by default (`python -m
providers.simulator`): only registered tokens exist, others get 401. With
`--accept-any-token` (what `start_simulator()` selects) a new token becomes a
channel on first use.

Faults (outbox.providers.simulator.faults): latency, error status and rate, 429 with
or without Retry-After, per-token rate limit, hang, hang after send, and
`media_not_found_rate` (404 on media endpoints), per scope.

What gets recorded: only ACCEPTED sends (HTTP 200). A rejected request
(missing auth, validation error, injected error status, 429) is counted per
status, never recorded. A hang never records either (the request is never
processed) unless `hang_after_send` is set, which records the send and
then never answers: the "accepted but the client saw a timeout" case that
makes duplicates.

Performance: the simulator is the ceiling in benchmarks, so there is no
per-request logging (no access log) and no O(n) work per request.
Tokens are stored (they are the simulator's own data, returned by
`/_sim/sent` and `/_sim/stats`) but never logged.

Run: `python -m outbox.providers.simulator --host 127.0.0.1 --port 8099`
(port 0 picks a free port; the actual URL is printed on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from outbox.providers.simulator.channels import Channel, ChannelConfigError, ChannelRegistry
from outbox.providers.simulator.faults import (
    FAULT_FIELDS,
    MAX_HANG_S,
    FaultConfigError,
    FaultScopes,
    validate_faults,
)
from outbox.providers.simulator.http import (
    authenticate,
    json_response,
    parse_bearer,
    read_json,
    whapi_error,
)
from outbox.providers.simulator.payloads import health_object, new_message_id
from outbox.providers.simulator.sends import (
    MEDIA_404_KINDS,
    REQUIRED_FIELDS,
    TO_PATTERN,
    media_id_of,
    send_content,
    validate_send,
)

__all__ = [
    "DEFAULT_PORT",
    "FAULT_FIELDS",
    "LISTENING_PREFIX",
    "TO_PATTERN",
    "SimulatorState",
    "build_app",
    "main",
    "serve",
    "validate_faults",
    "whapi_error",
]

DEFAULT_PORT: Final = 8099
#: The line `serve` prints once it listens; `start_simulator` waits for it.
LISTENING_PREFIX: Final = "Whapi simulator listening on "
MEDIA_NOT_FOUND: Final = "Media with specified id not found"
MESSAGE_NOT_FOUND: Final = "Specified message not found"


def chat_id_for(to: str) -> str:
    """`15551234567` -> `15551234567@s.whatsapp.net`; chat ids unchanged."""
    return to if "@" in to else f"{to}@s.whatsapp.net"


@dataclass(slots=True)
class TokenCounters:
    accepted: int = 0
    rejected: dict[int, int] = field(default_factory=dict)


class SimulatorState:
    """Everything the simulator knows. All access happens on one event loop."""

    def __init__(self, *, seed: int | None = None, accept_any_token: bool = False) -> None:
        self.rng = random.Random(seed)
        # Sequence numbers never restart, even across resets, so a reader
        # paginating with `since` can't be confused by a reset.
        self.next_seq = 1
        self.channels = ChannelRegistry(accept_any_token=accept_any_token)
        #: Called as hook(token, message) for every accepted send (message is
        #: the Whapi message object: id, chat_id, type, ...). Must not block
        #: or raise; outbox.providers.simulator.webhooks schedules its POSTs here.
        self.accept_hooks: list[Callable[[str, dict[str, Any]], None]] = []
        #: Called on POST /_sim/reset.
        self.reset_hooks: list[Callable[[], None]] = []
        self._reset_data()

    def _reset_data(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.first_seq = self.next_seq  # seq of records[0]
        self.by_token: dict[str, list[dict[str, Any]]] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        #: id -> Whapi message object, sent or injected, and its channel's token
        self.messages: dict[str, dict[str, Any]] = {}
        self.owners: dict[str, str | None] = {}
        #: media ids the simulator handed out (sends, injected messages)
        self.media_ids: set[str] = set()
        #: read receipts (PUT /messages/{id}) answered 200, arrival order
        self.reads: list[dict[str, Any]] = []
        self.accepted = 0
        self.rejected: dict[int, int] = {}
        self.tokens: dict[str, TokenCounters] = {}
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.hangs = 0
        self.hanging = 0
        self.faults = FaultScopes()
        self.started_at = time.time()

    def reset(self) -> None:
        # Requests in flight keep running: keep their count honest.
        in_flight, hanging = self.in_flight, self.hanging
        self._reset_data()
        self.channels.reset()
        self.in_flight, self.max_in_flight, self.hanging = in_flight, in_flight, hanging
        for hook in self.reset_hooks:
            hook()

    # -- faults ---------------------------------------------------------

    def set_faults(self, token: str | None, to: str | None, fields: dict[str, Any]) -> None:
        self.faults.set(token, chat_id_for(to) if to else None, fields)

    def clear_faults(self, token: str | None = None, to: str | None = None) -> None:
        self.faults.clear(token, chat_id_for(to) if to else None)

    def effective_faults(self, token: str, chat_id: str | None) -> dict[str, Any] | None:
        return self.faults.effective(token, chat_id)

    def faults_json(self) -> list[dict[str, Any]]:
        return self.faults.as_json()

    # -- counters and records -------------------------------------------

    def count_rejected(self, status: int, token: str | None) -> None:
        self.rejected[status] = self.rejected.get(status, 0) + 1
        if token is not None:
            counters = self.tokens.get(token)
            if counters is None:
                counters = self.tokens[token] = TokenCounters()
            counters.rejected[status] = counters.rejected.get(status, 0) + 1

    def record(
        self,
        *,
        token: str,
        kind: str,
        payload: dict[str, Any],
        message: dict[str, Any],
        received_at: float,
    ) -> dict[str, Any]:
        seq = self.next_seq
        self.next_seq += 1
        rec: dict[str, Any] = {
            "seq": seq,
            "id": message["id"],
            "token": token,
            "to": payload["to"],
            "chat_id": message["chat_id"],
            "type": kind,
            "body": payload.get("body"),
            "payload": payload,
            "received_at": received_at,
        }
        self.records.append(rec)
        per_token = self.by_token.get(token)
        if per_token is None:
            per_token = self.by_token[token] = []
        per_token.append(rec)
        self.by_id[rec["id"]] = rec
        self.messages[rec["id"]] = message
        self.owners[rec["id"]] = token
        content = message.get(kind)
        if isinstance(content, dict) and "id" in content:
            self.media_ids.add(content["id"])
        self.accepted += 1
        counters = self.tokens.get(token)
        if counters is None:
            counters = self.tokens[token] = TokenCounters()
        counters.accepted += 1
        for hook in self.accept_hooks:
            hook(token, message)
        return rec

    def unique_id(self) -> str:
        while True:
            mid = new_message_id()
            if mid not in self.messages:
                return mid

    def sent(
        self, *, token: str | None, to: str | None, since: int, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Records with seq > since, in arrival order; (page, has_more)."""
        if token is None:
            source = self.records
            start = max(0, since + 1 - self.first_seq)
        else:
            source = self.by_token.get(token, [])
            start = bisect.bisect_right(source, since, key=lambda r: r["seq"])
        if to is None:
            page = source[start : start + limit]
            return page, start + limit < len(source)
        chat = chat_id_for(to)
        out: list[dict[str, Any]] = []
        for i in range(start, len(source)):
            rec = source[i]
            if rec["chat_id"] == chat:
                if len(out) == limit:
                    return out, True
                out.append(rec)
        return out, False

    def stats_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "rejected": {str(k): v for k, v in sorted(self.rejected.items())},
            "rejected_total": sum(self.rejected.values()),
            "requests": self.requests,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "hangs": self.hangs,
            "hanging": self.hanging,
            "tokens": {
                tok: {
                    "accepted": c.accepted,
                    "rejected": {str(k): v for k, v in sorted(c.rejected.items())},
                }
                for tok, c in self.tokens.items()
            },
            "last_seq": self.next_seq - 1,
            "started_at": self.started_at,
        }


class _Handlers:
    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        #: message id -> awaitable to finish before answering (echo "before");
        #: the webhook sender's dict, set by build_app.
        self.answer_gates: dict[str, Awaitable[None]] = {}

    # -- Whapi API: sends ---------------------------------------------------

    async def send(self, request: web.Request) -> web.StreamResponse:
        state = self.state
        received_at = time.time()
        state.requests += 1
        state.in_flight += 1
        if state.in_flight > state.max_in_flight:
            state.max_in_flight = state.in_flight
        try:
            return await self._send(request, received_at)
        finally:
            state.in_flight -= 1

    async def _send(self, request: web.Request, received_at: float) -> web.StreamResponse:
        state = self.state
        kind = request.match_info["kind"]
        token = parse_bearer(request.headers.get("Authorization"))
        if token is None:
            state.count_rejected(401, None)
            return whapi_error(
                401, "Unauthorized", "Missing or malformed Authorization: Bearer <token>"
            )
        channel = state.channels.resolve(token)
        if channel is None:
            status = state.channels.unknown_token_status
            state.count_rejected(status, None)
            return whapi_error(status, "Unauthorized" if status == 401 else "Channel not found",
                               "No channel has this token")
        if not channel.can_send:
            state.count_rejected(401, token)
            return whapi_error(401, "Channel needs authorization",
                               f"The channel is not logged in (status {channel.status})")
        try:
            data = json.loads(await request.read())
        except ValueError:
            data = None
        if not isinstance(data, dict):
            state.count_rejected(400, token)
            return whapi_error(400, "Wrong request parameters", "Body must be a JSON object")
        if kind not in REQUIRED_FIELDS:
            return await self._forward(kind, token, data, received_at)
        to = data.get("to")
        chat_id = chat_id_for(to) if isinstance(to, str) and to else None

        faults = state.effective_faults(token, chat_id)
        hang_after = False
        if faults is not None:
            latency = faults.get("latency_ms", 0.0)
            jitter = faults.get("latency_jitter_ms", 0.0)
            if jitter:
                latency = max(0.0, latency + state.rng.uniform(-jitter, jitter))
            if latency:
                await asyncio.sleep(latency / 1000)
            hang_rate = faults.get("hang_rate", 1.0 if faults.get("hang") else 0.0)
            if hang_rate and (hang_rate >= 1 or state.rng.random() < hang_rate):
                if faults.get("hang_after_send"):
                    hang_after = True
                else:
                    await self._hang(request)
                    return web.Response(status=504)
            per_s = faults.get("rate_limit_per_s")
            if per_s is not None and state.faults.over_rate(token, per_s, time.monotonic()):
                return self._reject(429, token, faults)
            error_status = faults.get("error_status")
            if error_status is not None:
                rate = faults.get("error_rate", 1.0)
                if rate >= 1 or state.rng.random() < rate:
                    return self._reject(error_status, token, faults)
            media_rate = faults.get("media_not_found_rate", 0.0)
            if media_rate and kind in MEDIA_404_KINDS and (
                    media_rate >= 1 or state.rng.random() < media_rate):
                state.count_rejected(404, token)
                return whapi_error(404, MEDIA_NOT_FOUND)

        problem = validate_send(kind, data)
        if problem is not None:
            state.count_rejected(400, token)
            return whapi_error(400, "Wrong request parameters", problem)
        if kind in MEDIA_404_KINDS:
            media_id = media_id_of(data)
            if media_id is not None and media_id not in state.media_ids:
                state.count_rejected(404, token)
                return whapi_error(404, MEDIA_NOT_FOUND, f"No media with id {media_id}")

        assert chat_id is not None  # validated above
        message: dict[str, Any] = {
            "id": state.unique_id(),
            "from_me": True,
            "type": kind,
            "chat_id": chat_id,
            "timestamp": int(received_at),
            "source": "api",
            "status": "pending",
            kind: send_content(kind, data, int(received_at)),
        }
        state.record(token=token, kind=kind, payload=data, message=message, received_at=received_at)
        # Serialise now: status webhooks update `message` in place later.
        answer = json_response({"sent": True, "message": message})
        if self.answer_gates:
            await self._pass_gate(message["id"])
        if hang_after:
            await self._hang(request)
            return web.Response(status=504)
        return answer

    async def _pass_gate(self, message_id: str) -> None:
        """Echo mode "before": the echo's first delivery attempt comes first."""
        gate = self.answer_gates.pop(message_id, None)
        if gate is not None:
            await gate

    async def _forward(self, message_id: str, token: str, data: dict[str, Any],
                       received_at: float) -> web.Response:
        """POST /messages/{MessageID}: forward a message this channel knows."""
        state = self.state
        original = state.messages.get(message_id)
        if original is None or state.owners.get(message_id) != token:
            state.count_rejected(404, token)
            return whapi_error(404, MESSAGE_NOT_FOUND)
        to = data.get("to")
        if not isinstance(to, str) or not TO_PATTERN.match(to):
            state.count_rejected(400, token)
            return whapi_error(400, "Wrong request parameters",
                               "Parameter 'to' does not match pattern")
        kind = original["type"]
        message = {
            "id": state.unique_id(), "from_me": True, "type": kind, "chat_id": chat_id_for(to),
            "timestamp": int(received_at), "source": "api", "status": "pending",
            "context": {"forwarded": True, "forwarding_score": 1},
        }
        if kind in original:
            message[kind] = original[kind]
        state.record(token=token, kind=kind, payload=data, message=message,
                     received_at=received_at)
        answer = json_response({"sent": True, "message": message})
        if self.answer_gates:
            await self._pass_gate(message["id"])
        return answer

    def _reject(self, status: int, token: str, faults: Mapping[str, Any]) -> web.Response:
        self.state.count_rejected(status, token)
        retry_after = faults.get("retry_after")
        if status == 429 and retry_after is not None:
            return whapi_error(status, faults.get("error_message"),
                               **{"Retry-After": retry_after})
        return whapi_error(status, faults.get("error_message"))

    async def _hang(self, request: web.Request) -> None:
        """Never answer: wait until the client gives up (or MAX_HANG_S)."""
        state = self.state
        state.hangs += 1
        state.hanging += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_HANG_S
        try:
            while loop.time() < deadline:
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                await asyncio.sleep(0.05)
        finally:
            state.hanging -= 1

    # -- Whapi API: messages by id, health --------------------------------

    def _own_message(self, request: web.Request) -> tuple[Channel, dict[str, Any]] | web.Response:
        channel = authenticate(request, self.state.channels)
        if isinstance(channel, web.Response):
            return channel
        mid = request.match_info["message_id"]
        message = self.state.messages.get(mid)
        if message is None or self.state.owners.get(mid) not in (channel.token, None):
            return whapi_error(404, MESSAGE_NOT_FOUND)
        return channel, message

    async def get_message(self, request: web.Request) -> web.StreamResponse:
        found = self._own_message(request)
        if isinstance(found, web.Response):
            return found
        return json_response(found[1])

    async def mark_read(self, request: web.Request) -> web.StreamResponse:
        found = self._own_message(request)
        if isinstance(found, web.Response):
            return found
        channel, message = found
        if not channel.can_send:
            return whapi_error(401, "Channel needs authorization")
        self.state.reads.append({"token": channel.token, "message_id": message["id"],
                                 "chat_id": message.get("chat_id"),
                                 "received_at": time.time()})
        return json_response({"success": True})

    async def delete_message(self, request: web.Request) -> web.StreamResponse:
        found = self._own_message(request)
        if isinstance(found, web.Response):
            return found
        if not found[0].can_send:
            return whapi_error(401, "Channel needs authorization")
        found[1]["status"] = "deleted"
        return json_response({"success": True})

    async def health(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") is None:
            # A probe: "is the simulator up?" needs no token.
            return json_response(health_object(
                status_text="AUTH", channel_id="SIMULATOR",
                started_at=self.state.started_at, user=None))
        channel = authenticate(request, self.state.channels)
        if isinstance(channel, web.Response):
            return channel
        user = {"id": channel.phone, "name": channel.name} if channel.can_send else None
        return json_response(health_object(
            status_text=channel.status, channel_id=channel.channel_id,
            started_at=channel.started_at, user=user))

    # -- control API ----------------------------------------------------

    async def sim_sent(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            since = int(q.get("since", "0"))
            limit = int(q.get("limit", "10000"))
        except ValueError:
            return json_response({"error": "since and limit must be integers"}, 400)
        limit = max(1, min(limit, 100_000))
        page, more = self.state.sent(
            token=q.get("token") or None, to=q.get("to") or None, since=since, limit=limit
        )
        return json_response(
            {
                "records": page,
                "count": len(page),
                "next_since": page[-1]["seq"] if page else since,
                "has_more": more,
            }
        )

    async def sim_reads(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token") or None
        reads = [r for r in self.state.reads if token is None or r["token"] == token]
        return json_response({"reads": reads, "count": len(reads)})

    async def sim_stats(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.state.stats_json())

    async def sim_get_faults(self, request: web.Request) -> web.StreamResponse:
        return json_response({"faults": self.state.faults_json()})

    async def sim_set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await read_json(request)
            if not isinstance(body, dict):
                raise FaultConfigError("body must be a JSON object")
            token = body.pop("token", None)
            to = body.pop("to", None)
            if token is not None and not isinstance(token, str):
                raise FaultConfigError("token must be a string")
            if to is not None and not isinstance(to, str):
                raise FaultConfigError("to must be a string")
            fields = validate_faults(body)
        except (ValueError, FaultConfigError) as exc:
            return json_response({"error": str(exc)}, 400)
        self.state.set_faults(token or None, to or None, fields)
        return json_response({"faults": self.state.faults_json()})

    async def sim_clear_faults(self, request: web.Request) -> web.StreamResponse:
        self.state.clear_faults(request.query.get("token") or None, request.query.get("to") or None)
        return json_response({"faults": self.state.faults_json()})

    async def sim_reset(self, request: web.Request) -> web.StreamResponse:
        self.state.reset()
        return json_response({"reset": True, "last_seq": self.state.next_seq - 1})

    async def sim_channels(self, request: web.Request) -> web.StreamResponse:
        return json_response(self.state.channels.as_json())

    async def sim_register_channel(self, request: web.Request) -> web.StreamResponse:
        try:
            channel = self.state.channels.register(await read_json(request))
        except (ValueError, ChannelConfigError) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(channel.as_json())

    async def sim_configure_channels(self, request: web.Request) -> web.StreamResponse:
        try:
            self.state.channels.configure(await read_json(request))
        except (ValueError, ChannelConfigError) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(self.state.channels.as_json())

    async def sim_remove_channel(self, request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        if not token:
            return json_response({"error": "token is required"}, 400)
        self.state.channels.channels.pop(token, None)
        return json_response(self.state.channels.as_json())


STATE_KEY: Final = web.AppKey("whapi_simulator_state", SimulatorState)


def build_app(
    *, state: SimulatorState | None = None, seed: int | None = None, accept_any_token: bool = False
) -> web.Application:
    """The simulator as an aiohttp application (state under `app[STATE_KEY]`)."""
    from outbox.providers.simulator.inject import MessageStore, install_inject
    from outbox.providers.simulator.settings_api import install_settings_api
    from outbox.providers.simulator.webhooks import install

    state = state if state is not None else SimulatorState(
        seed=seed, accept_any_token=accept_any_token)
    h = _Handlers(state)
    # Base64 media can be large; Whapi's own limit is well above aiohttp's 1 MB.
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state
    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("POST", "/messages/{kind}", h.send),
        ("GET", "/messages/{message_id}", h.get_message),
        ("PUT", "/messages/{message_id}", h.mark_read),
        ("DELETE", "/messages/{message_id}", h.delete_message),
        ("GET", "/health", h.health),
        ("GET", "/_sim/sent", h.sim_sent),
        ("GET", "/_sim/reads", h.sim_reads),
        ("GET", "/_sim/stats", h.sim_stats),
        ("GET", "/_sim/faults", h.sim_get_faults),
        ("POST", "/_sim/faults", h.sim_set_faults),
        ("DELETE", "/_sim/faults", h.sim_clear_faults),
        ("POST", "/_sim/reset", h.sim_reset),
        ("GET", "/_sim/channels", h.sim_channels),
        ("POST", "/_sim/channels", h.sim_register_channel),
        ("PATCH", "/_sim/channels", h.sim_configure_channels),
        ("DELETE", "/_sim/channels", h.sim_remove_channel),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    sender = install(app, state.channels, state.accept_hooks, state.reset_hooks)
    h.answer_gates = sender.answer_gates
    install_settings_api(app, state.channels, sender)
    install_inject(app, MessageStore(state), state.channels, sender)
    return app


async def _serve(
    host: str, port: int, *, seed: int | None, keepalive_timeout: float, accept_any_token: bool
) -> None:
    runner = web.AppRunner(
        build_app(seed=seed, accept_any_token=accept_any_token),
        access_log=None,
        keepalive_timeout=keepalive_timeout,
        shutdown_timeout=1.0,
        handle_signals=False,
    )
    await runner.setup()
    # A large backlog: benchmarks open hundreds of connections at once.
    site = web.TCPSite(runner, host, port, backlog=4096, reuse_address=True)
    await site.start()
    actual_port = port
    for addr in runner.addresses:
        if isinstance(addr, tuple) and len(addr) >= 2:
            actual_port = int(addr[1])
            break
    shown_host = f"[{host}]" if ":" in host else host
    print(f"{LISTENING_PREFIX}http://{shown_host}:{actual_port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # non-Unix
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    *,
    seed: int | None = None,
    keepalive_timeout: float = 75.0,
    accept_any_token: bool = False,
) -> None:
    """Run the simulator until SIGINT/SIGTERM (blocking).

    Prints `Whapi simulator listening on http://HOST:PORT` once it accepts
    connections; with `port=0` the printed port is the one the OS picked.
    `accept_any_token=False` (strict): only tokens registered with
    `POST /_sim/channels` are accepted.
    """
    asyncio.run(_serve(host, port, seed=seed, keepalive_timeout=keepalive_timeout,
                       accept_any_token=accept_any_token))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m outbox.providers.simulator", description="Run the Whapi.cloud simulator."
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = any)"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for random faults")
    parser.add_argument(
        "--keepalive-timeout",
        type=float,
        default=75.0,
        help="seconds before an idle keep-alive connection is closed (default 75)",
    )
    parser.add_argument(
        "--accept-any-token",
        action="store_true",
        help="a token seen for the first time becomes a channel (default: only tokens "
        "registered with POST /_sim/channels; others get 401)",
    )
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port, seed=args.seed, keepalive_timeout=args.keepalive_timeout,
              accept_any_token=args.accept_any_token)
    except OSError as exc:
        print(f"simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
