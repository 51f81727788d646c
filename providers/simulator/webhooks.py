"""The simulator's outgoing webhooks: delivery the way Whapi does it.

Every event (a status of an accepted send, the `from_me` echo of an API send,
or anything injected through the control endpoints of
outbox.providers.simulator.inject) becomes one JSON body, sent once to each
webhook of the channel that subscribed to its `{type, method}`, in that
webhook's mode (outbox.providers.simulator.settings). A delivery is retried until
it gets HTTP 200 (the spec: "each time a callback fails to get a HTTPS 200
OK response"; a 201 or 204 is retried too), with Whapi's linear backoff
(delay, 2 x delay, ... capped), and never given up while the simulator runs:
only `POST /_sim/reset`, `DELETE /_sim/webhooks` for its scope or shutdown
end it. At most MAX_PENDING deliveries and status sequences are alive at a
time; beyond that new ones are dropped and counted (`stats.dropped`).

Control API:

    GET    /_sim/webhooks                configurations and counters:
           {"webhooks": [{"token", "webhooks": [{url, mode, headers (names), events}],
                          "callback_backoff_delay_ms", "max_callback_backoff_delay_ms",
                          "delays_ms", "statuses_method", "echo", "channel_id"}],
            "stats": {"scheduled", "posted", "failed", "attempts", "retries", "dropped",
                      "pending", "statuses": {"<http status>": n}}}
           `posted`: deliveries that got their 200; `failed`: deliveries whose
           last attempt failed (being retried); `statuses`: per attempt, 0 =
           connection error or timeout.
    POST   /_sim/webhooks                configure one scope (fields in
           outbox.providers.simulator.settings): {"token": str | null, "url" | "webhooks",
           "mode", "headers", "events", "callback_backoff_delay_ms",
           "max_callback_backoff_delay_ms", "delays_ms", "statuses_method", "echo",
           "channel_id"}. `token` null: every token without its own configuration.
    DELETE /_sim/webhooks[?token=]       remove one scope (or all) and cancel
                                         its deliveries
    GET    /_sim/webhooks/log?since=&token=&limit=
           delivery attempts in order: {"attempts": [{"seq", "delivery", "token",
           "event": {"type", "method"}, "method", "url", "attempt", "status",
           "error", "at", "body"}], "next_since", "has_more"}

A configuration set with Whapi's own `PATCH /settings` (providers.
simulator_settings_api) lands in the same place, under the caller's token.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web

from outbox.providers.simulator.channels import ChannelRegistry
from outbox.providers.simulator.http import json_response, read_json
from outbox.providers.simulator.payloads import envelope, status_entry
from outbox.providers.simulator.settings import (
    SettingsError,
    WebhookConfig,
    parse_control_config,
)

__all__ = ["SENDER_KEY", "Delivery", "WebhookSender", "install"]

MAX_PENDING: Final = 10_000  # deliveries + status sequences alive at once
CONCURRENCY: Final = 32  # webhook requests in flight
POST_TIMEOUT_SECONDS: Final = 5.0
LOG_SIZE: Final = 100_000  # delivery attempts kept for /_sim/webhooks/log
DEFAULT_CHANNEL_ID: Final = "SIMULATOR"
VOICE_KINDS: Final = frozenset({"voice", "audio"})
FAILED_ERRORS: Final = ({"code": 400, "message": "Message could not be delivered"},)


@dataclass(slots=True, eq=False)
class Delivery:
    """One body on its way to one webhook URL."""

    id: int
    token: str | None
    event_type: str
    event_method: str
    http_method: str
    url: str
    headers: Mapping[str, str]
    data: bytes
    body: Any  # what the log shows: the JSON object, or the raw text
    retry_delay_s: Callable[[int], float]
    first_attempt: asyncio.Future[None]
    done: asyncio.Future[bool]
    attempts: int = 0
    failing: bool = False


@dataclass(slots=True)
class WebhookStats:
    scheduled: int = 0
    posted: int = 0
    failed: int = 0
    attempts: int = 0
    retries: int = 0
    dropped: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


class WebhookSender:
    """Builds, schedules and sends webhooks. Lives on the simulator's loop."""

    def __init__(
        self,
        registry: ChannelRegistry,
        *,
        max_pending: int = MAX_PENDING,
        concurrency: int = CONCURRENCY,
        log_size: int = LOG_SIZE,
    ) -> None:
        self.registry = registry
        self.configs: dict[str | None, WebhookConfig] = {}
        self.stats = WebhookStats()
        #: message id -> awaitable the send handler awaits before answering
        #: (echo mode "before"); read by providers.simulator.
        self.answer_gates: dict[str, Awaitable[None]] = {}
        self._max_pending = max_pending
        self._concurrency = concurrency
        self._tasks: set[asyncio.Task[None]] = set()
        self._sem: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)
        self._log: deque[dict[str, Any]] = deque(maxlen=log_size)
        self._next_seq = 1  # never restarts, like /_sim/sent's seq

    # -- configuration ------------------------------------------------------

    def config_for(self, token: str | None) -> WebhookConfig | None:
        if token is not None:
            config = self.configs.get(token)
            if config is not None:
                return config
        return self.configs.get(None)

    def channel_id_for(self, token: str | None, config: WebhookConfig | None) -> str:
        if config is not None and config.behaviour.channel_id:
            return config.behaviour.channel_id
        channel = self.registry.channels.get(token) if token is not None else None
        return channel.channel_id if channel is not None else DEFAULT_CHANNEL_ID

    def subscribed(self, token: str | None, event_type: str, method: str) -> bool:
        config = self.config_for(token)
        return config is not None and any(
            w.wants(event_type, method) for w in config.settings.webhooks)

    def set_config(self, token: str | None, config: WebhookConfig) -> None:
        self.configs[token] = config

    def clear_config(self, token: str | None = None) -> None:
        """Remove one scope (or every scope) and cancel its deliveries."""
        if token is None:
            self.configs.clear()
            self._cancel(lambda t: True)
        else:
            self.configs.pop(token, None)
            self._cancel(lambda t: t == token)

    def reset(self) -> None:
        self.configs.clear()
        self.stats = WebhookStats()
        self._log.clear()
        self._cancel(lambda t: True)

    def _cancel(self, matches: Callable[[str | None], bool]) -> None:
        for task in list(self._tasks):
            if matches(getattr(task, "sim_token", None)):
                task.cancel()

    async def aclose(self) -> None:
        self.reset()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- emitting -----------------------------------------------------------

    def emit(
        self, token: str | None, event_type: str, method: str, payload: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[Delivery]]:
        """Wrap `payload` (the event's arrays) in Whapi's envelope and send it
        to every subscribed webhook. Returns (body, deliveries)."""
        config = self.config_for(token)
        body = envelope(payload, event_type, method, self.channel_id_for(token, config))
        if config is None:
            return body, []
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        return body, self._deliver_all(token, config, event_type, method, data, body)

    def emit_raw(
        self, token: str | None, event_type: str, method: str, data: bytes, shown: Any
    ) -> list[Delivery]:
        """Send `data` exactly as given (malformed-payload tests)."""
        config = self.config_for(token)
        if config is None:
            return []
        return self._deliver_all(token, config, event_type, method, data, shown)

    def _deliver_all(
        self, token: str | None, config: WebhookConfig, event_type: str, method: str,
        data: bytes, shown: Any,
    ) -> list[Delivery]:
        out: list[Delivery] = []
        loop = asyncio.get_running_loop()
        for webhook in config.settings.webhooks:
            if not webhook.wants(event_type, method):
                continue
            if len(self._tasks) >= self._max_pending:
                self.stats.dropped += 1
                continue
            http_method, url = webhook.target(event_type, method)
            delivery = Delivery(
                id=next(self._ids), token=token, event_type=event_type, event_method=method,
                http_method=http_method, url=url,
                headers={"Content-Type": "application/json", **webhook.headers},
                data=data, body=shown, retry_delay_s=config.settings.retry_delay_s,
                first_attempt=loop.create_future(), done=loop.create_future())
            self.stats.scheduled += 1
            self._spawn(self._run(delivery), token)
            out.append(delivery)
        return out

    def _spawn(self, coro: Awaitable[None], token: str | None) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        task.sim_token = token  # type: ignore[attr-defined]  # read by _cancel
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what an accepted send triggers -------------------------------------

    def message_accepted(self, token: str, message: dict[str, Any]) -> None:
        """Hook for every accepted send: its echo and its statuses. Never blocks."""
        config = self.config_for(token)
        if config is None:
            return
        behaviour = config.behaviour
        if behaviour.echo != "none" and self.subscribed(token, "messages", "post"):
            channel = self.registry.channels.get(token)
            echo = dict(message)  # status "pending", as the send's answer said
            if channel is not None:
                echo["from"] = channel.phone
            _, deliveries = self.emit(token, "messages", "post", {"messages": [echo]})
            if behaviour.echo == "before" and deliveries:
                self.answer_gates[message["id"]] = first_attempts(deliveries)
        if behaviour.delays_ms and self.subscribed(token, "statuses", behaviour.statuses_method):
            if len(self._tasks) >= self._max_pending:
                self.stats.dropped += 1
                return
            plan = [(s, ms) for s, ms in behaviour.delays_ms.items()
                    if s != "played" or message.get("type") in VOICE_KINDS]
            self._spawn(self._statuses(token, message, plan, behaviour.statuses_method,
                                       time.monotonic()), token)

    async def _statuses(self, token: str, message: dict[str, Any],
                        plan: list[tuple[str, float]], method: str, accepted: float) -> None:
        for status, delay_ms in plan:
            wait = accepted + delay_ms / 1000 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            message["status"] = status  # what GET /messages/{id} shows from now on
            entry = status_entry(message_id=message["id"], status=status,
                                 recipient_id=message["chat_id"], at=time.time(),
                                 errors=FAILED_ERRORS if status == "failed" else None)
            self.emit(token, "statuses", method, {"statuses": [entry]})

    # -- delivery -----------------------------------------------------------

    async def _run(self, d: Delivery) -> None:
        try:
            while True:
                status = await self._attempt(d)
                if not d.first_attempt.done():
                    d.first_attempt.set_result(None)
                if status == 200:
                    self.stats.posted += 1
                    if d.failing:
                        self.stats.failed -= 1
                    d.done.set_result(True)
                    return
                if not d.failing:
                    d.failing = True
                    self.stats.failed += 1
                self.stats.retries += 1
                await asyncio.sleep(d.retry_delay_s(d.attempts))
        finally:
            if not d.done.done():  # cancelled: reset, scope removed, shutdown
                if d.failing:
                    self.stats.failed -= 1
                d.done.set_result(False)
            if not d.first_attempt.done():
                d.first_attempt.set_result(None)

    async def _attempt(self, d: Delivery) -> int:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self._concurrency)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_SECONDS))
        status, error = 0, None
        async with self._sem:
            d.attempts += 1
            try:
                async with self._session.request(d.http_method, d.url, data=d.data,
                                                 headers=d.headers,
                                                 allow_redirects=False) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = type(exc).__name__
        stats = self.stats
        stats.attempts += 1
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        self._log.append({
            "seq": self._next_seq, "delivery": d.id, "token": d.token,
            "event": {"type": d.event_type, "method": d.event_method},
            "method": d.http_method, "url": d.url, "attempt": d.attempts, "status": status,
            "error": error, "at": time.time(), "body": d.body})
        self._next_seq += 1
        return status

    # -- reading ------------------------------------------------------------

    def log_page(self, *, since: int, token: str | None, limit: int
                 ) -> tuple[list[dict[str, Any]], bool]:
        log = self._log
        first = log[0]["seq"] if log else self._next_seq
        start = max(0, since + 1 - first)
        out: list[dict[str, Any]] = []
        for entry in itertools.islice(log, start, None):
            if token is not None and entry["token"] != token:
                continue
            if len(out) == limit:
                return out, True
            out.append(entry)
        return out, False

    def as_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "webhooks": [{"token": token, **c.as_control()} for token, c in self.configs.items()],
            "stats": {"scheduled": s.scheduled, "posted": s.posted, "failed": s.failed,
                      "attempts": s.attempts, "retries": s.retries, "dropped": s.dropped,
                      "pending": len(self._tasks),
                      "statuses": {str(k): v for k, v in sorted(s.statuses.items())}},
        }


async def first_attempts(deliveries: Iterable[Delivery]) -> None:
    """Done when each delivery has had its first answer (or failure)."""
    # asyncio.wait, not wait_for(gather): a timeout must not cancel the futures.
    await asyncio.wait([d.first_attempt for d in deliveries], timeout=POST_TIMEOUT_SECONDS + 1)


async def wait_delivered(deliveries: list[Delivery], within_s: float) -> bool:
    """True when every delivery got its 200 within `within_s` (and there was one)."""
    if not deliveries:
        return False
    done, _ = await asyncio.wait([d.done for d in deliveries], timeout=within_s)
    return len(done) == len(deliveries) and all(f.result() for f in done)


SENDER_KEY: Final = web.AppKey("whapi_simulator_webhooks", WebhookSender)


def install(app: web.Application, registry: ChannelRegistry,
            accept_hooks: list[Callable[[str, dict[str, Any]], None]],
            reset_hooks: list[Callable[[], None]]) -> WebhookSender:
    """Add webhooks to a simulator app: hooks (accepted sends, reset), the
    /_sim/webhooks routes, cleanup on shutdown."""
    sender = WebhookSender(registry)
    app[SENDER_KEY] = sender
    accept_hooks.append(sender.message_accepted)
    reset_hooks.append(sender.reset)

    async def get_config(request: web.Request) -> web.StreamResponse:
        return json_response(sender.as_json())

    async def set_config(request: web.Request) -> web.StreamResponse:
        try:
            token, config = parse_control_config(await read_json(request))
        except (ValueError, SettingsError) as exc:
            return json_response({"error": str(exc)}, 400)
        sender.set_config(token, config)
        return json_response(sender.as_json())

    async def clear_config(request: web.Request) -> web.StreamResponse:
        sender.clear_config(request.query.get("token") or None)
        return json_response(sender.as_json())

    async def get_log(request: web.Request) -> web.StreamResponse:
        try:
            since = int(request.query.get("since", "0"))
            limit = max(1, min(int(request.query.get("limit", "10000")), 100_000))
        except ValueError:
            return json_response({"error": "since and limit must be integers"}, 400)
        page, more = sender.log_page(since=since, token=request.query.get("token") or None,
                                     limit=limit)
        return json_response({"attempts": page, "count": len(page),
                              "next_since": page[-1]["seq"] if page else since,
                              "has_more": more})

    async def close(_: web.Application) -> None:
        await sender.aclose()

    app.router.add_route("GET", "/_sim/webhooks", get_config)
    app.router.add_route("POST", "/_sim/webhooks", set_config)
    app.router.add_route("DELETE", "/_sim/webhooks", clear_config)
    app.router.add_route("GET", "/_sim/webhooks/log", get_log)
    app.on_cleanup.append(close)
    return sender
