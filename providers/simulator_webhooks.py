"""The simulator's status webhooks: after it accepts a send, it POSTs `sent`,
`delivered` and `read` back, in Whapi's format, after configurable delays.

Control API (added to the simulator by `install`):

    GET    /_sim/webhooks                  configuration and counters
    POST   /_sim/webhooks                  configure one scope:
           {"token": "<token>" | null,     (null: every token without its own)
            "url": "http://.../webhooks/whapi/<channel id>",
            "headers": {"X-Outbox-Webhook-Secret": "..."},
            "delays_ms": {"sent": 50, "delivered": 300, "read": 600},
            "channel_id": "SIMULATOR"}     (Whapi's channel id in the payload)
    DELETE /_sim/webhooks[?token=]         stop (one scope, or all)

`delays_ms` lists the statuses to send (in that order) and when, counted
from the moment the send was accepted. `POST /_sim/reset` clears the
configuration and cancels webhooks not yet sent.

Never in the send path's way: each accepted message gets one background
task (its statuses in order), at most MAX_PENDING of them at a time
(beyond that, new ones are dropped and counted), and at most CONCURRENCY
POSTs in flight. A POST that fails (connection error, non-2xx) is retried
a few times, like Whapi, which retries until it gets a 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web

MAX_PENDING: Final = 10_000  # messages with webhooks still to send
CONCURRENCY: Final = 32  # webhook POSTs in flight
POST_TIMEOUT_SECONDS: Final = 5.0
POST_ATTEMPTS: Final = 4
RETRY_BASE_SECONDS: Final = 0.2
MAX_DELAY_MS: Final = 3_600_000.0
DEFAULT_DELAYS_MS: Final = {"sent": 50.0, "delivered": 300.0, "read": 600.0}
#: Whapi's numeric status codes (WHAPI.md: 3 delivered, 4 read; others inferred).
STATUS_CODES: Final = {"pending": 1, "sent": 2, "delivered": 3, "read": 4, "played": 5}


class WebhookConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    headers: dict[str, str]
    delays_ms: dict[str, float]  # status -> delay after acceptance, in sending order
    channel_id: str = "SIMULATOR"

    def as_json(self) -> dict[str, Any]:
        # Header values are the receiver's secrets: shown by name only.
        return {"url": self.url, "headers": sorted(self.headers), "delays_ms": self.delays_ms,
                "channel_id": self.channel_id}


def parse_config(body: Any) -> tuple[str | None, WebhookConfig]:
    """A POST /_sim/webhooks body → (token scope, config)."""
    if not isinstance(body, dict):
        raise WebhookConfigError("body must be a JSON object")
    unknown = set(body) - {"token", "url", "headers", "delays_ms", "channel_id"}
    if unknown:
        raise WebhookConfigError(f"unknown field(s): {', '.join(sorted(unknown))}")
    token = body.get("token")
    if token is not None and (not isinstance(token, str) or not token):
        raise WebhookConfigError("token must be a non-empty string or null")
    url = body.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise WebhookConfigError("url must start with http:// or https://")
    headers = body.get("headers") or {}
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise WebhookConfigError("headers must be an object of strings")
    delays = body.get("delays_ms", DEFAULT_DELAYS_MS)
    if not isinstance(delays, dict):
        raise WebhookConfigError("delays_ms must be an object: status -> milliseconds")
    clean: dict[str, float] = {}
    for status, ms in delays.items():
        if status not in STATUS_CODES:
            raise WebhookConfigError(f"unknown status {status!r} in delays_ms")
        if isinstance(ms, bool) or not isinstance(ms, int | float) or math.isnan(ms) or not (
                0 <= ms <= MAX_DELAY_MS):
            raise WebhookConfigError(f"delays_ms.{status} must be 0 to {MAX_DELAY_MS:g}")
        clean[status] = float(ms)
    channel_id = body.get("channel_id", "SIMULATOR")
    if not isinstance(channel_id, str) or not channel_id:
        raise WebhookConfigError("channel_id must be a non-empty string")
    return token, WebhookConfig(url, dict(headers), clean, channel_id)


def status_payload(*, message_id: str, status: str, recipient_id: str, channel_id: str,
                   at: float) -> dict[str, Any]:
    """Whapi's status webhook body (note: a string timestamp here)."""
    return {
        "statuses": [{"id": message_id, "code": STATUS_CODES[status], "status": status,
                      "recipient_id": recipient_id, "timestamp": str(int(at))}],
        "event": {"type": "statuses", "event": "post"},
        "channel_id": channel_id,
    }


@dataclass(slots=True)
class WebhookStats:
    scheduled: int = 0
    posted: int = 0  # answered 2xx
    failed: int = 0  # gave up after POST_ATTEMPTS
    dropped: int = 0  # over MAX_PENDING
    statuses: dict[int, int] = field(default_factory=dict)  # HTTP status -> count


class WebhookSender:
    """Schedules and sends status webhooks. Lives on the simulator's loop."""

    def __init__(self, *, max_pending: int = MAX_PENDING, concurrency: int = CONCURRENCY) -> None:
        self.configs: dict[str | None, WebhookConfig] = {}
        self.stats = WebhookStats()
        self._max_pending = max_pending
        self._concurrency = concurrency
        self._tasks: set[asyncio.Task[None]] = set()
        self._sem: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None

    def config_for(self, token: str) -> WebhookConfig | None:
        return self.configs.get(token) or self.configs.get(None)

    def message_accepted(self, token: str, message: dict[str, Any]) -> None:
        """Hook called by the simulator for every accepted send (never blocks)."""
        config = self.config_for(token)
        if config is None or not config.delays_ms:
            return
        if len(self._tasks) >= self._max_pending:
            self.stats.dropped += 1
            return
        self.stats.scheduled += 1
        task = asyncio.get_running_loop().create_task(
            self._deliver(config, str(message["id"]), str(message["chat_id"]), time.monotonic()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reset(self) -> None:
        self.configs.clear()
        self.stats = WebhookStats()
        for task in list(self._tasks):
            task.cancel()

    async def aclose(self) -> None:
        self.reset()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def as_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "webhooks": [{"token": token, **c.as_json()} for token, c in self.configs.items()],
            "stats": {"scheduled": s.scheduled, "posted": s.posted, "failed": s.failed,
                      "dropped": s.dropped, "pending": len(self._tasks),
                      "statuses": {str(k): v for k, v in sorted(s.statuses.items())}},
        }

    async def _deliver(self, config: WebhookConfig, message_id: str, chat_id: str,
                       accepted: float) -> None:
        for status, delay_ms in config.delays_ms.items():
            wait = accepted + delay_ms / 1000 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            body = status_payload(message_id=message_id, status=status, recipient_id=chat_id,
                                  channel_id=config.channel_id, at=time.time())
            await self._post(config, body)

    async def _post(self, config: WebhookConfig, body: dict[str, Any]) -> None:
        if self._sem is None:
            self._sem = asyncio.Semaphore(self._concurrency)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_SECONDS))
        data = json.dumps(body, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", **config.headers}
        for attempt in range(POST_ATTEMPTS):
            status = 0
            async with self._sem:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with self._session.post(config.url, data=data,
                                                  headers=headers) as resp:
                        await resp.read()
                        status = resp.status
            self.stats.statuses[status] = self.stats.statuses.get(status, 0) + 1
            if 200 <= status < 300:
                self.stats.posted += 1
                return
            if 400 <= status < 500 and status != 429:
                break  # the receiver refuses it (bad secret, unknown channel): don't insist
            await asyncio.sleep(RETRY_BASE_SECONDS * 2 ** attempt)
        self.stats.failed += 1


SENDER_KEY: Final = web.AppKey("whapi_simulator_webhooks", WebhookSender)


def install(app: web.Application, state: Any) -> WebhookSender:
    """Add status webhooks to a simulator app: hooks on the state (accepted
    sends, reset), the /_sim/webhooks routes, cleanup on shutdown."""
    sender = WebhookSender()
    app[SENDER_KEY] = sender
    accept_hooks: list[Callable[[str, dict[str, Any]], None]] = state.accept_hooks
    reset_hooks: list[Callable[[], None]] = state.reset_hooks
    accept_hooks.append(sender.message_accepted)
    reset_hooks.append(sender.reset)

    async def get_config(request: web.Request) -> web.StreamResponse:
        return web.json_response(sender.as_json())

    async def set_config(request: web.Request) -> web.StreamResponse:
        try:
            token, config = parse_config(json.loads(await request.read() or b"{}"))
        except (ValueError, WebhookConfigError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        sender.configs[token] = config
        return web.json_response(sender.as_json())

    async def clear_config(request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        if token:
            sender.configs.pop(token, None)
        else:
            sender.configs.clear()
        return web.json_response(sender.as_json())

    async def close(_: web.Application) -> None:
        await sender.aclose()

    app.router.add_route("GET", "/_sim/webhooks", get_config)
    app.router.add_route("POST", "/_sim/webhooks", set_config)
    app.router.add_route("DELETE", "/_sim/webhooks", clear_config)
    app.on_cleanup.append(close)
    return sender
