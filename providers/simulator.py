"""A Whapi.cloud simulator: a real HTTP server speaking Whapi's send API.

Users run it to try the outbox without a Whapi account; the demo, the tests
and the benchmark run against it. It is faithful to shared/WHAPI.md for the
parts we use (send endpoints, Bearer auth, `to` validation, Whapi-shaped
success and error bodies) and adds a control API under `/_sim/`:

    GET    /_sim/sent?token=&to=&since=<seq>&limit=   accepted sends, arrival order
    GET    /_sim/stats                                 counters
    GET    /_sim/faults                                current fault config
    POST   /_sim/faults                                set faults for one scope
    DELETE /_sim/faults[?token=&to=]                   clear one scope (or all)
    POST   /_sim/reset                                 clear faults, records, stats
    GET|POST|DELETE /_sim/webhooks                     status webhooks: providers.simulator_webhooks

Faults are set per scope: global (no `token`, no `to`), one token, one
recipient, or one token and recipient. For each request the scopes that
match are merged field by field, most specific last (global < token <
recipient < token+recipient). Posting a scope replaces that scope's fields.

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

Run: `python -m providers.simulator --host 127.0.0.1 --port 8099`
(port 0 picks a free port; the actual URL is printed on stdout).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import random
import re
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

__all__ = [
    "DEFAULT_PORT",
    "FAULT_FIELDS",
    "LISTENING_PREFIX",
    "SimulatorState",
    "build_app",
    "main",
    "serve",
]

DEFAULT_PORT: Final = 8099
#: The line `serve` prints once it listens; `start_simulator` waits for it.
LISTENING_PREFIX: Final = "Whapi simulator listening on "

TO_PATTERN: Final = re.compile(r"^[\d-]{9,31}(@[\w\.]{1,})?$")

# Required fields per send endpoint (shared/WHAPI.md).
MEDIA_TYPES: Final = ("image", "video", "gif", "short", "document", "audio", "voice")
REQUIRED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "text": ("body",),
    **{kind: ("media",) for kind in MEDIA_TYPES},
    "location": ("latitude", "longitude"),
    "contact": ("name", "vcard"),
}

STATUS_MESSAGES: Final[Mapping[int, str]] = {
    400: "Wrong request parameters",
    401: "Channel needs authorization",
    402: "Trial limit exceeded",
    403: "Forbidden to send to this recipient",
    404: "Channel not found",
    408: "Request timeout",
    409: "Conflict",
    413: "Request entity too large",
    415: "Unsupported media type",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}

#: Accepted fault fields and their validators (value -> normalised value).
FAULT_FIELDS: Final = (
    "latency_ms",
    "latency_jitter_ms",
    "error_rate",
    "error_status",
    "retry_after",
    "rate_limit_per_s",
    "hang",
    "hang_rate",
    "hang_after_send",
)

#: A hang ends when the client disconnects, or after this many seconds.
MAX_HANG_S: Final = 600.0
_JSON: Final = "application/json"


class FaultConfigError(ValueError):
    """A POST /_sim/faults body that makes no sense."""


def _number(name: str, value: Any, *, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultConfigError(f"{name} must be a number")
    v = float(value)
    if not (lo <= v <= hi) or math.isnan(v):
        raise FaultConfigError(f"{name} must be between {lo:g} and {hi:g}")
    return v


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise FaultConfigError(f"{name} must be true or false")
    return value


def validate_faults(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise one scope's fault fields (without token/to)."""
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in FAULT_FIELDS:
            raise FaultConfigError(f"unknown fault field {name!r}")
        if value is None:
            continue
        if name in ("latency_ms", "latency_jitter_ms"):
            out[name] = _number(name, value, lo=0, hi=MAX_HANG_S * 1000)
        elif name in ("error_rate", "hang_rate"):
            out[name] = _number(name, value, lo=0, hi=1)
        elif name == "error_status":
            status = _number(name, value, lo=100, hi=599)
            if status != int(status) or status < 300:
                raise FaultConfigError("error_status must be an integer HTTP error status")
            out[name] = int(status)
        elif name == "retry_after":
            # A number becomes delta-seconds; a string is sent verbatim (so a
            # test can send an HTTP-date or garbage).
            if isinstance(value, str):
                out[name] = value
            else:
                secs = _number(name, value, lo=0, hi=10**9)
                out[name] = str(int(secs)) if secs == int(secs) else str(secs)
        elif name == "rate_limit_per_s":
            out[name] = _number(name, value, lo=0, hi=10**9)
        else:  # hang, hang_after_send
            out[name] = _bool(name, value)
    if "error_status" in out and "error_rate" not in out:
        out["error_rate"] = 1.0
    return out


def chat_id_for(to: str) -> str:
    """`15551234567` -> `15551234567@s.whatsapp.net`; chat ids unchanged."""
    return to if "@" in to else f"{to}@s.whatsapp.net"


def new_message_id() -> str:
    """A Whapi-looking id: 22 url-safe characters (16 random bytes)."""
    return secrets.token_urlsafe(16)


@dataclass(slots=True)
class TokenCounters:
    accepted: int = 0
    rejected: dict[int, int] = field(default_factory=dict)


@dataclass(slots=True)
class Scope:
    token: str | None
    to: str | None
    fields: dict[str, Any]


class SimulatorState:
    """Everything the simulator knows. All access happens on one event loop."""

    def __init__(self, *, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        # Sequence numbers never restart, even across resets, so a reader
        # paginating with `since` can't be confused by a reset.
        self.next_seq = 1
        #: Called as hook(token, message) for every accepted send (message is
        #: the Whapi message object: id, chat_id, type, ...). Must not block
        #: or raise; providers.simulator_webhooks schedules its POSTs here.
        self.accept_hooks: list[Callable[[str, dict[str, Any]], None]] = []
        #: Called on POST /_sim/reset.
        self.reset_hooks: list[Callable[[], None]] = []
        self._reset_data()

    def _reset_data(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.first_seq = self.next_seq  # seq of records[0]
        self.by_token: dict[str, list[dict[str, Any]]] = {}
        self.by_id: dict[str, dict[str, Any]] = {}
        self.messages: dict[str, dict[str, Any]] = {}  # id -> Whapi message object
        self.accepted = 0
        self.rejected: dict[int, int] = {}
        self.tokens: dict[str, TokenCounters] = {}
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.hangs = 0
        self.hanging = 0
        self.scopes: dict[tuple[str | None, str | None], Scope] = {}
        self.windows: dict[str, deque[float]] = {}
        self.started_at = time.time()

    def reset(self) -> None:
        # Requests in flight keep running: keep their count honest.
        in_flight, hanging = self.in_flight, self.hanging
        self._reset_data()
        self.in_flight, self.max_in_flight, self.hanging = in_flight, in_flight, hanging
        for hook in self.reset_hooks:
            hook()

    # -- faults ---------------------------------------------------------

    def set_faults(self, token: str | None, to: str | None, fields: dict[str, Any]) -> None:
        key = (token, chat_id_for(to) if to else None)
        self.scopes[key] = Scope(token=token, to=key[1], fields=fields)

    def clear_faults(self, token: str | None = None, to: str | None = None) -> None:
        if token is None and to is None:
            self.scopes.clear()
            self.windows.clear()
        else:
            self.scopes.pop((token, chat_id_for(to) if to else None), None)

    def effective_faults(self, token: str, chat_id: str | None) -> dict[str, Any] | None:
        scopes = self.scopes
        if not scopes:
            return None
        merged: dict[str, Any] = {}
        for key in ((None, None), (token, None), (None, chat_id), (token, chat_id)):
            scope = scopes.get(key)
            if scope is not None:
                merged.update(scope.fields)
        return merged or None

    def faults_json(self) -> list[dict[str, Any]]:
        return [{"token": s.token, "to": s.to, **s.fields} for s in self.scopes.values()]

    def over_rate(self, token: str, per_s: float, now: float) -> bool:
        """Sliding 1 s window per token; only allowed requests use budget."""
        window = self.windows.get(token)
        if window is None:
            window = self.windows[token] = deque()
        cutoff = now - 1.0
        while window and window[0] <= cutoff:
            window.popleft()
        if len(window) >= per_s:
            return True
        window.append(now)
        return False

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
            if mid not in self.by_id:
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


def _json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(obj, separators=(",", ":")).encode(),
        status=status,
        content_type=_JSON,
        headers=headers,
    )


def whapi_error(
    status: int, message: str | None = None, details: str | None = None, **headers: str
) -> web.Response:
    """Whapi's error body: {"error": {"code", "message", "details"?}}."""
    text = message or STATUS_MESSAGES.get(status, "Error")
    err: dict[str, Any] = {"code": status, "message": text}
    if details:
        err["details"] = details
    return _json_response({"error": err}, status, headers or None)


def _validate_send(kind: str, data: dict[str, Any]) -> str | None:
    """Return a validation error message, or None when the body is fine."""
    to = data.get("to")
    if to is None:
        return "Parameter 'to' is required"
    if not isinstance(to, str) or not TO_PATTERN.match(to):
        return "Parameter 'to' does not match pattern ^[\\d-]{9,31}(@[\\w\\.]{1,})?$"
    for name in REQUIRED_FIELDS[kind]:
        value = data.get(name)
        if value is None:
            return f"Parameter '{name}' is required"
        if name in ("latitude", "longitude"):
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"Parameter '{name}' must be a number"
        elif not isinstance(value, str) or not value.strip():
            return f"Parameter '{name}' must be a non-empty string"
    typing_time = data.get("typing_time")
    if typing_time is not None and (
        isinstance(typing_time, bool)
        or not isinstance(typing_time, int | float)
        or not 0 <= typing_time <= 60
    ):
        return "Parameter 'typing_time' must be between 0 and 60"
    return None


def _content(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """The type-specific part of the message object (media is not echoed)."""
    content = {k: v for k, v in data.items() if k not in ("to", "media")}
    media = data.get("media")
    if isinstance(media, str):
        if media.startswith(("http://", "https://")):
            content["link"] = media
        else:
            content["id"] = f"{kind}-{secrets.token_hex(8)}"
    return content


def _parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


class _Handlers:
    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    # -- Whapi API ------------------------------------------------------

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
        if kind not in REQUIRED_FIELDS:
            state.count_rejected(404, None)
            return whapi_error(404, "Not found", f"No endpoint POST /messages/{kind}")
        token = _parse_bearer(request.headers.get("Authorization"))
        if token is None:
            state.count_rejected(401, None)
            return whapi_error(
                401, "Unauthorized", "Missing or malformed Authorization: Bearer <token>"
            )
        try:
            data = json.loads(await request.read())
        except ValueError:
            data = None
        if not isinstance(data, dict):
            state.count_rejected(400, token)
            return whapi_error(400, "Wrong request parameters", "Body must be a JSON object")
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
            if per_s is not None and state.over_rate(token, per_s, time.monotonic()):
                return self._reject(429, token, faults)
            status = faults.get("error_status")
            if status is not None:
                rate = faults.get("error_rate", 1.0)
                if rate >= 1 or state.rng.random() < rate:
                    return self._reject(status, token, faults)

        problem = _validate_send(kind, data)
        if problem is not None:
            state.count_rejected(400, token)
            return whapi_error(400, "Wrong request parameters", problem)

        assert chat_id is not None  # validated above
        message: dict[str, Any] = {
            "id": state.unique_id(),
            "from_me": True,
            "type": kind,
            "chat_id": chat_id,
            "timestamp": int(received_at),
            "source": "api",
            "status": "pending",
            kind: _content(kind, data),
        }
        state.record(token=token, kind=kind, payload=data, message=message, received_at=received_at)
        if hang_after:
            await self._hang(request)
            return web.Response(status=504)
        return _json_response({"sent": True, "message": message})

    def _reject(self, status: int, token: str, faults: Mapping[str, Any]) -> web.Response:
        self.state.count_rejected(status, token)
        retry_after = faults.get("retry_after")
        if status == 429 and retry_after is not None:
            return whapi_error(status, **{"Retry-After": retry_after})
        return whapi_error(status)

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

    async def get_message(self, request: web.Request) -> web.StreamResponse:
        token = _parse_bearer(request.headers.get("Authorization"))
        if token is None:
            return whapi_error(401, "Unauthorized", "Missing or malformed Authorization")
        mid = request.match_info["message_id"]
        rec = self.state.by_id.get(mid)
        if rec is None or rec["token"] != token:
            return whapi_error(404, "Message not found")
        return _json_response(self.state.messages[mid])

    async def health(self, request: web.Request) -> web.StreamResponse:
        # Whapi requires auth here; the simulator also answers without it so
        # that "is it up?" probes need no token.
        return _json_response(
            {
                "channel_id": "SIMULATOR",
                "start_at": int(self.state.started_at),
                "uptime": int(time.time() - self.state.started_at),
                "status": {"code": 4, "text": "AUTH"},
                "version": "simulator",
            }
        )

    # -- control API ----------------------------------------------------

    async def sim_sent(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            since = int(q.get("since", "0"))
            limit = int(q.get("limit", "10000"))
        except ValueError:
            return _json_response({"error": "since and limit must be integers"}, 400)
        limit = max(1, min(limit, 100_000))
        page, more = self.state.sent(
            token=q.get("token") or None, to=q.get("to") or None, since=since, limit=limit
        )
        return _json_response(
            {
                "records": page,
                "count": len(page),
                "next_since": page[-1]["seq"] if page else since,
                "has_more": more,
            }
        )

    async def sim_stats(self, request: web.Request) -> web.StreamResponse:
        return _json_response(self.state.stats_json())

    async def sim_get_faults(self, request: web.Request) -> web.StreamResponse:
        return _json_response({"faults": self.state.faults_json()})

    async def sim_set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            body = json.loads(await request.read() or b"{}")
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
            return _json_response({"error": str(exc)}, 400)
        self.state.set_faults(token or None, to or None, fields)
        return _json_response({"faults": self.state.faults_json()})

    async def sim_clear_faults(self, request: web.Request) -> web.StreamResponse:
        self.state.clear_faults(request.query.get("token") or None, request.query.get("to") or None)
        return _json_response({"faults": self.state.faults_json()})

    async def sim_reset(self, request: web.Request) -> web.StreamResponse:
        self.state.reset()
        return _json_response({"reset": True, "last_seq": self.state.next_seq - 1})


STATE_KEY: Final = web.AppKey("whapi_simulator_state", SimulatorState)


def build_app(*, state: SimulatorState | None = None, seed: int | None = None) -> web.Application:
    """The simulator as an aiohttp application (state under `app[STATE_KEY]`)."""
    state = state if state is not None else SimulatorState(seed=seed)
    h = _Handlers(state)
    # Base64 media can be large; Whapi's own limit is well above aiohttp's 1 MB.
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE_KEY] = state
    routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
        ("POST", "/messages/{kind}", h.send),
        ("GET", "/messages/{message_id}", h.get_message),
        ("GET", "/health", h.health),
        ("GET", "/_sim/sent", h.sim_sent),
        ("GET", "/_sim/stats", h.sim_stats),
        ("GET", "/_sim/faults", h.sim_get_faults),
        ("POST", "/_sim/faults", h.sim_set_faults),
        ("DELETE", "/_sim/faults", h.sim_clear_faults),
        ("POST", "/_sim/reset", h.sim_reset),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    # Status webhooks (/_sim/webhooks) live in their own module.
    from providers.simulator_webhooks import install

    install(app, state)
    return app


async def _serve(host: str, port: int, *, seed: int | None, keepalive_timeout: float) -> None:
    runner = web.AppRunner(
        build_app(seed=seed),
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
) -> None:
    """Run the simulator until SIGINT/SIGTERM (blocking).

    Prints `Whapi simulator listening on http://HOST:PORT` once it accepts
    connections; with `port=0` the printed port is the one the OS picked.
    """
    asyncio.run(_serve(host, port, seed=seed, keepalive_timeout=keepalive_timeout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m providers.simulator", description="Run the Whapi.cloud simulator."
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
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port, seed=args.seed, keepalive_timeout=args.keepalive_timeout)
    except OSError as exc:
        print(f"simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
