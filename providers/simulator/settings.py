"""Webhook settings per channel, shaped like Whapi's (schemas `Settings`,
`Webhook`, `WebhookParameters`, `Event`), plus the simulator's own knobs.

Whapi's part, set with `PATCH /settings` or `POST /_sim/webhooks`:

* `webhooks`: a list of `{url, mode, headers, events}`. `mode` is `body`
  (POST to `url`), `path` (POST to `url/<type>/<method>`) or `method`
  (`url/<type>` with the event's method as the HTTP method). `headers`: at
  most 5, sent with every request. `events`: `[{type, method}]`; only those
  are sent. Deprecated type names (`message`, `ack`, `chat`, `status`) are
  read as `messages`, `statuses`, `chats`, `channel`.
* `callback_backoff_delay_ms`, `max_callback_backoff_delay_ms`: a callback
  that does not get HTTP 200 is retried after delay, 2 x delay, 3 x delay, ...
  (linear, Whapi's wording), each wait capped at the maximum. Defaults are
  Whapi's own example values: 3,000 and 900,000 ms. `PATCH /settings`
  enforces the spec's ranges (3,000-15,000 and 600,000-3,600,000); the
  control endpoint accepts anything from 0 so tests can run fast.

Default `events` when a webhook gives none:

* `PATCH /settings`: every event the simulator emits (ALL_EVENTS below), so
  nothing is silently missing. (The spec's own default, `message.put`, is a
  deprecated name and would drop nearly everything.)
* `POST /_sim/webhooks`: `statuses.post` and `statuses.put`, what that
  endpoint sent before event subscriptions existed.

The simulator's knobs (control endpoint only; `Behaviour`): `delays_ms`
(the statuses every accepted send goes through and when), `statuses_method`
(`post`, or `put` for an offline backlog), `echo` (when the `from_me` echo of
an API send is posted: `after` the answer, `before` it, or `none`), and
`channel_id` (overrides the channel's id in payloads).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from outbox.providers.simulator.payloads import EVENT_METHODS, EVENT_TYPES, STATUS_CODES

__all__ = [
    "ALL_EVENTS",
    "CONTROL_DEFAULT_EVENTS",
    "Behaviour",
    "ChannelSettings",
    "SettingsError",
    "Webhook",
    "WebhookConfig",
    "parse_control_config",
    "patch_settings",
]

Event = tuple[str, str]  # (type, method)

#: What the simulator can emit, and what `GET /settings/events` lists.
ALL_EVENTS: Final[tuple[Event, ...]] = (
    ("messages", "post"), ("messages", "put"), ("messages", "patch"), ("messages", "delete"),
    ("statuses", "post"), ("statuses", "put"),
    ("chats", "post"), ("chats", "put"), ("chats", "patch"), ("chats", "delete"),
    ("calls", "post"), ("channel", "post"), ("channel", "patch"),
    ("users", "post"), ("users", "delete"),
)
CONTROL_DEFAULT_EVENTS: Final[tuple[Event, ...]] = (("statuses", "post"), ("statuses", "put"))
DEPRECATED_TYPES: Final[Mapping[str, str]] = {
    "message": "messages", "ack": "statuses", "chat": "chats", "status": "channel",
}
MODES: Final = ("body", "path", "method")
MAX_HEADERS: Final = 5
DEFAULT_BACKOFF_MS: Final = 3_000.0
DEFAULT_MAX_BACKOFF_MS: Final = 900_000.0
SPEC_BACKOFF_RANGE: Final = (3_000.0, 15_000.0)
SPEC_MAX_BACKOFF_RANGE: Final = (600_000.0, 3_600_000.0)
CONTROL_BACKOFF_RANGE: Final = (0.0, 86_400_000.0)
MAX_DELAY_MS: Final = 3_600_000.0
DEFAULT_DELAYS_MS: Final[Mapping[str, float]] = {
    "sent": 50.0, "delivered": 300.0, "read": 600.0, "played": 900.0,
}
ECHO_MODES: Final = ("after", "before", "none")
#: Schema `UpdateSettings.changes`: the only names Whapi reports as changed.
REPORTED_CHANGES: Final = (
    "callback_backoff_delay_ms", "max_callback_backoff_delay_ms", "callback_persist", "media",
    "webhooks", "on_call_pager", "pass_through", "sent_status", "proxy", "mobile_proxy",
)
_BACKOFF_KEYS: Final = ("callback_backoff_delay_ms", "max_callback_backoff_delay_ms")


class SettingsError(ValueError):
    """A settings body that makes no sense (400 with this message)."""


@dataclass(frozen=True, slots=True)
class Webhook:
    url: str
    mode: str
    headers: Mapping[str, str]
    events: tuple[Event, ...]
    _wanted: frozenset[Event] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_wanted", frozenset(self.events))

    def wants(self, event_type: str, method: str) -> bool:
        return (event_type, method) in self._wanted

    def target(self, event_type: str, method: str) -> tuple[str, str]:
        """(HTTP method, URL) for one event in this webhook's mode."""
        if self.mode == "body":
            return "POST", self.url
        base, sep, query = self.url.partition("?")
        base = base.rstrip("/")
        if self.mode == "path":
            return "POST", f"{base}/{event_type}/{method}{sep}{query}"
        return method.upper(), f"{base}/{event_type}{sep}{query}"

    def as_whapi(self) -> dict[str, Any]:
        return {"url": self.url, "mode": self.mode, "headers": dict(self.headers),
                "events": [{"type": t, "method": m} for t, m in self.events]}

    def as_control(self) -> dict[str, Any]:
        # Header values are the receiver's secrets: the control API shows names only.
        return {**self.as_whapi(), "headers": sorted(self.headers)}


@dataclass(frozen=True, slots=True)
class ChannelSettings:
    """Whapi's `Settings` for one channel (the webhook part acts; the rest is kept)."""

    webhooks: tuple[Webhook, ...] = ()
    callback_backoff_delay_ms: float = DEFAULT_BACKOFF_MS
    max_callback_backoff_delay_ms: float = DEFAULT_MAX_BACKOFF_MS
    other: Mapping[str, Any] = field(default_factory=dict)

    def retry_delay_s(self, failures: int) -> float:
        """Seconds to wait after the `failures`-th failed attempt in a row."""
        ms = min(failures * self.callback_backoff_delay_ms, self.max_callback_backoff_delay_ms)
        return ms / 1000

    def as_whapi(self) -> dict[str, Any]:
        return {**self.other,
                "callback_backoff_delay_ms": _num_out(self.callback_backoff_delay_ms),
                "max_callback_backoff_delay_ms": _num_out(self.max_callback_backoff_delay_ms),
                "webhooks": [w.as_whapi() for w in self.webhooks]}


@dataclass(frozen=True, slots=True)
class Behaviour:
    """The simulator's own knobs (not Whapi settings)."""

    delays_ms: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_DELAYS_MS))
    statuses_method: str = "post"
    echo: str = "after"
    channel_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"delays_ms": dict(self.delays_ms), "statuses_method": self.statuses_method,
                "echo": self.echo, "channel_id": self.channel_id}


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    settings: ChannelSettings
    behaviour: Behaviour = field(default_factory=Behaviour)

    def as_control(self) -> dict[str, Any]:
        s = self.settings
        return {"webhooks": [w.as_control() for w in s.webhooks],
                "callback_backoff_delay_ms": s.callback_backoff_delay_ms,
                "max_callback_backoff_delay_ms": s.max_callback_backoff_delay_ms,
                **self.behaviour.as_json()}


def _num_out(value: float) -> float | int:
    return int(value) if value == int(value) else value


def _number(name: str, value: Any, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise SettingsError(f"{name} must be a number")
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be between {lo:g} and {hi:g}")
    return float(value)


def _events(raw: Any, default: tuple[Event, ...]) -> tuple[Event, ...]:
    if raw is None:
        return default
    if not isinstance(raw, list):
        raise SettingsError("events must be a list of {type, method}")
    out: list[Event] = []
    for item in raw:
        if not isinstance(item, dict):
            raise SettingsError("each event must be an object {type, method}")
        raw_type = item.get("type")
        kind = DEPRECATED_TYPES.get(raw_type, raw_type) if isinstance(raw_type, str) else None
        method = item.get("method")
        if kind not in EVENT_TYPES:
            raise SettingsError(f"unknown event type {item.get('type')!r}")
        if method not in EVENT_METHODS:
            raise SettingsError(f"event method must be one of {', '.join(EVENT_METHODS)}")
        if (kind, method) not in out:
            out.append((kind, method))
    return tuple(out)


def _webhook(raw: Any, default_events: tuple[Event, ...]) -> Webhook:
    if not isinstance(raw, dict):
        raise SettingsError("each webhook must be an object")
    unknown = set(raw) - {"url", "mode", "headers", "events"}
    if unknown:
        raise SettingsError(f"unknown webhook field(s): {', '.join(sorted(unknown))}")
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise SettingsError("url must start with http:// or https://")
    mode = raw.get("mode") or "body"
    if mode not in MODES:
        raise SettingsError(f"mode must be one of {', '.join(MODES)}")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in headers.items()):
        raise SettingsError("headers must be an object of strings")
    if len(headers) > MAX_HEADERS:
        raise SettingsError(f"at most {MAX_HEADERS} headers")
    return Webhook(url=url, mode=mode, headers=dict(headers),
                   events=_events(raw.get("events"), default_events))


def _webhooks(raw: Any, default_events: tuple[Event, ...]) -> tuple[Webhook, ...]:
    if not isinstance(raw, list):
        raise SettingsError("webhooks must be a list")
    return tuple(_webhook(w, default_events) for w in raw)


def patch_settings(current: ChannelSettings, body: Any) -> tuple[ChannelSettings, list[str]]:
    """`PATCH /settings`: fields present change, the others stay (Whapi's rule).

    Returns the new settings and the names of the fields that changed, among
    those schema `UpdateSettings.changes` lists (offline_mode, for one, is
    stored but not reported).
    """
    if not isinstance(body, dict):
        raise SettingsError("body must be a JSON object")
    new = current
    if "webhooks" in body:
        new = replace(new, webhooks=_webhooks(body["webhooks"], ALL_EVENTS))
    if "callback_backoff_delay_ms" in body:
        new = replace(new, callback_backoff_delay_ms=_number(
            "callback_backoff_delay_ms", body["callback_backoff_delay_ms"], *SPEC_BACKOFF_RANGE))
    if "max_callback_backoff_delay_ms" in body:
        new = replace(new, max_callback_backoff_delay_ms=_number(
            "max_callback_backoff_delay_ms", body["max_callback_backoff_delay_ms"],
            *SPEC_MAX_BACKOFF_RANGE))
    others = {k: v for k, v in body.items() if k not in ("webhooks", *_BACKOFF_KEYS)}
    if others:
        new = replace(new, other={**current.other, **others})
    before, after = current.as_whapi(), new.as_whapi()
    changes = [k for k in REPORTED_CHANGES if before.get(k) != after.get(k)]
    return new, changes


_CONTROL_FIELDS: Final = frozenset({
    "token", "url", "mode", "headers", "events", "webhooks", *_BACKOFF_KEYS, "delays_ms",
    "statuses_method", "echo", "channel_id",
})


def parse_control_config(body: Any) -> tuple[str | None, WebhookConfig]:
    """A `POST /_sim/webhooks` body → (token scope, config).

    Either `url` (+ `mode`, `headers`, `events`) for one webhook, or
    `webhooks` (Whapi's list). `token` null/absent: every token without a
    configuration of its own.
    """
    if not isinstance(body, dict):
        raise SettingsError("body must be a JSON object")
    unknown = set(body) - _CONTROL_FIELDS
    if unknown:
        raise SettingsError(f"unknown field(s): {', '.join(sorted(unknown))}")
    token = body.get("token")
    if token is not None and (not isinstance(token, str) or not token):
        raise SettingsError("token must be a non-empty string or null")
    if ("url" in body) == ("webhooks" in body):
        raise SettingsError("give either url (one webhook) or webhooks (a list)")
    if "webhooks" in body:
        webhooks = _webhooks(body["webhooks"], CONTROL_DEFAULT_EVENTS)
    else:
        webhooks = (_webhook({k: body[k] for k in ("url", "mode", "headers", "events")
                              if k in body}, CONTROL_DEFAULT_EVENTS),)
    settings = ChannelSettings(
        webhooks=webhooks,
        callback_backoff_delay_ms=_number(
            "callback_backoff_delay_ms",
            body.get("callback_backoff_delay_ms", DEFAULT_BACKOFF_MS), *CONTROL_BACKOFF_RANGE),
        max_callback_backoff_delay_ms=_number(
            "max_callback_backoff_delay_ms",
            body.get("max_callback_backoff_delay_ms", DEFAULT_MAX_BACKOFF_MS),
            *CONTROL_BACKOFF_RANGE),
    )
    return token, WebhookConfig(settings=settings, behaviour=_behaviour(body))


def _behaviour(body: Mapping[str, Any]) -> Behaviour:
    delays = body.get("delays_ms", DEFAULT_DELAYS_MS)
    if not isinstance(delays, dict):
        raise SettingsError("delays_ms must be an object: status -> milliseconds")
    clean: dict[str, float] = {}
    for status, ms in delays.items():
        if status not in STATUS_CODES:
            raise SettingsError(f"unknown status {status!r} in delays_ms")
        clean[status] = _number(f"delays_ms.{status}", ms, 0, MAX_DELAY_MS)
    statuses_method = body.get("statuses_method", "post")
    if statuses_method not in ("post", "put"):
        raise SettingsError("statuses_method must be post or put")
    echo = body.get("echo", "after")
    if echo not in ECHO_MODES:
        raise SettingsError(f"echo must be one of {', '.join(ECHO_MODES)}")
    channel_id = body.get("channel_id")
    if channel_id is not None and (not isinstance(channel_id, str) or not channel_id):
        raise SettingsError("channel_id must be a non-empty string")
    return Behaviour(delays_ms=clean, statuses_method=statuses_method, echo=echo,
                     channel_id=channel_id)
