"""Drive the Whapi simulator from Python: start it, inspect it, inject faults
and events.

    with start_simulator() as sim:                 # subprocess on a free port
        ctl = SimulatorControl(sim.url)
        ctl.set_faults(token="tok", error_status=503, error_rate=0.5)
        ...                                        # point a channel's base_url at sim.url
        records = ctl.sent(token="tok")            # what the "provider" accepted
        ctl.set_webhooks("http://127.0.0.1:8000/webhooks/whapi/<id>", token="tok",
                         mode="method", events=[("messages", "post"), ("statuses", "post")])
        got = ctl.inbound("tok", text="hi", phone="5215512345678", wait=True)
        ctl.action("tok", got.message_id, "reaction", emoji="👍", wait=True)
        attempts = ctl.webhook_log()               # every delivery attempt, in order

The endpoints behind each method are documented in providers.simulator,
outbox.providers.simulator.webhooks and outbox.providers.simulator.inject.

The control client is synchronous (httpx.Client): tests, the demo and the
benchmark call it between phases, not on a hot path.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

import outbox
from outbox.providers.simulator.app import LISTENING_PREFIX

__all__ = [
    "ChannelInfo",
    "DeliveryAttempt",
    "Injection",
    "SentRecord",
    "SimulatorControl",
    "SimulatorHandle",
    "SimulatorStartError",
    "SimulatorStats",
    "TokenStats",
    "WebhookStats",
    "start_simulator",
]

# Where the `outbox` package is imported from (the checkout or site-packages),
# so the simulator's process imports the same code.
_REPO_ROOT = Path(outbox.__file__).resolve().parent.parent


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Building one costs ~20 ms; tests create a control client per test.
    return httpx.create_ssl_context()


@dataclass(frozen=True, slots=True)
class SentRecord:
    """One send the simulator accepted."""

    seq: int
    id: str
    to: str
    chat_id: str
    type: str
    payload: Mapping[str, Any]  # the full JSON body as received, `to` included
    received_at: float  # unix time when the request arrived
    token: str = field(repr=False)  # the Bearer token it came with
    body: str | None = None  # payload["body"] for text messages

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SentRecord:
        return cls(
            seq=int(d["seq"]),
            id=str(d["id"]),
            to=str(d["to"]),
            chat_id=str(d["chat_id"]),
            type=str(d["type"]),
            payload=dict(d["payload"]),
            received_at=float(d["received_at"]),
            token=str(d["token"]),
            body=d.get("body"),
        )


@dataclass(frozen=True, slots=True)
class TokenStats:
    accepted: int
    rejected: dict[int, int]


@dataclass(frozen=True, slots=True)
class SimulatorStats:
    accepted: int
    rejected: dict[int, int]  # HTTP status -> count (validation, auth, injected)
    requests: int  # send requests received, whatever happened to them
    in_flight: int
    max_in_flight: int
    hangs: int  # requests that were left hanging (never answered)
    hanging: int  # of which still hanging now
    tokens: dict[str, TokenStats] = field(repr=False)
    last_seq: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SimulatorStats:
        def statuses(m: Mapping[str, Any]) -> dict[int, int]:
            return {int(k): int(v) for k, v in m.items()}

        return cls(
            accepted=int(d["accepted"]),
            rejected=statuses(d["rejected"]),
            requests=int(d["requests"]),
            in_flight=int(d["in_flight"]),
            max_in_flight=int(d["max_in_flight"]),
            hangs=int(d["hangs"]),
            hanging=int(d["hanging"]),
            tokens={
                tok: TokenStats(accepted=int(t["accepted"]), rejected=statuses(t["rejected"]))
                for tok, t in d["tokens"].items()
            },
            last_seq=int(d.get("last_seq", 0)),
        )


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """One simulated Whapi channel (POST /_sim/channels)."""

    token: str = field(repr=False)
    channel_id: str
    phone: str
    name: str
    status: str  # schema ChannelStatus.text: AUTH, QR, ERROR, ...
    auto: bool  # registered on first use (accept_any_token)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ChannelInfo:
        return cls(token=str(d["token"]), channel_id=str(d["channel_id"]), phone=str(d["phone"]),
                   name=str(d["name"]), status=str(d["status"]), auto=bool(d["auto"]))


@dataclass(frozen=True, slots=True)
class Injection:
    """What an injection endpoint posted (or would have, with no subscriber)."""

    body: Any  # the JSON body posted (for raw: the string)
    event_type: str
    event_method: str
    message_ids: list[str]
    deliveries: list[int]  # delivery ids, as in webhook_log()
    delivered: bool | None  # None unless waited; True: every delivery got its 200

    @property
    def message_id(self) -> str:
        return self.message_ids[0]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Injection:
        return cls(body=d["body"], event_type=str(d["event"]["type"]),
                   event_method=str(d["event"]["method"]),
                   message_ids=[str(i) for i in d["message_ids"]],
                   deliveries=[int(i) for i in d["deliveries"]], delivered=d["delivered"])


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One webhook request the simulator made (GET /_sim/webhooks/log)."""

    seq: int
    delivery: int  # attempts of one delivery share it
    event_type: str
    event_method: str
    method: str  # the HTTP method used
    url: str
    attempt: int  # 1 for the first try
    status: int  # HTTP status received; 0 = connection error or timeout
    error: str | None
    at: float
    body: Any = field(repr=False)
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> DeliveryAttempt:
        return cls(seq=int(d["seq"]), delivery=int(d["delivery"]),
                   event_type=str(d["event"]["type"]), event_method=str(d["event"]["method"]),
                   method=str(d["method"]), url=str(d["url"]), attempt=int(d["attempt"]),
                   status=int(d["status"]), error=d.get("error"), at=float(d["at"]),
                   body=d["body"], token=d.get("token"))


@dataclass(frozen=True, slots=True)
class WebhookStats:
    scheduled: int  # deliveries created
    posted: int  # deliveries that got their 200
    failed: int  # deliveries whose last attempt failed (being retried)
    attempts: int
    retries: int
    dropped: int  # over the pending cap
    pending: int  # deliveries and status sequences alive
    statuses: dict[int, int]  # HTTP status per attempt (0 = no answer)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> WebhookStats:
        return cls(scheduled=int(d["scheduled"]), posted=int(d["posted"]),
                   failed=int(d["failed"]), attempts=int(d["attempts"]),
                   retries=int(d["retries"]), dropped=int(d["dropped"]),
                   pending=int(d["pending"]),
                   statuses={int(k): int(v) for k, v in d["statuses"].items()})


Events = Sequence[tuple[str, str]]


def _events_json(events: Events | None) -> list[dict[str, str]] | None:
    return None if events is None else [{"type": t, "method": m} for t, m in events]


def _drop_none(body: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


class SimulatorControl:
    """Typed synchronous client for the simulator's `/_sim/` control API."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, trust_env=False, verify=_ssl_context()
        )

    def __repr__(self) -> str:
        return f"SimulatorControl({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimulatorControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _json(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            raise RuntimeError(
                f"simulator control {resp.request.method} {resp.request.url.path}: "
                f"HTTP {resp.status_code}: {resp.text[:300]}"
            )
        return resp.json()

    def sent(
        self,
        token: str | None = None,
        since: int = 0,
        *,
        to: str | None = None,
        limit: int | None = None,
        page_size: int = 20_000,
    ) -> list[SentRecord]:
        """Accepted sends with seq > since, in arrival order (all pages unless `limit`)."""
        out: list[SentRecord] = []
        while True:
            want = page_size if limit is None else min(page_size, limit - len(out))
            if want <= 0:
                return out
            params: dict[str, str | int] = {"since": since, "limit": want}
            if token is not None:
                params["token"] = token
            if to is not None:
                params["to"] = to
            page = self._json(self._http.get("/_sim/sent", params=params))
            out.extend(SentRecord.from_json(r) for r in page["records"])
            since = int(page["next_since"])
            if not page["has_more"]:
                return out

    def reads(self, token: str | None = None) -> list[dict[str, Any]]:
        """Read receipts the simulator answered (PUT /messages/{id}), in
        arrival order: {"token", "message_id", "chat_id", "received_at"}."""
        params = {"token": token} if token is not None else {}
        reads: list[dict[str, Any]] = self._json(self._http.get("/_sim/reads",
                                                                params=params))["reads"]
        return reads

    def stats(self) -> SimulatorStats:
        return SimulatorStats.from_json(self._json(self._http.get("/_sim/stats")))

    def faults(self) -> list[dict[str, Any]]:
        faults: list[dict[str, Any]] = self._json(self._http.get("/_sim/faults"))["faults"]
        return faults

    def set_faults(
        self,
        *,
        token: str | None = None,
        to: str | None = None,
        latency_ms: float | None = None,
        latency_jitter_ms: float | None = None,
        error_rate: float | None = None,
        error_status: int | None = None,
        error_message: str | None = None,
        retry_after: float | str | None = None,
        rate_limit_per_s: float | None = None,
        hang: bool | None = None,
        hang_rate: float | None = None,
        hang_after_send: bool | None = None,
        media_not_found_rate: float | None = None,
    ) -> list[dict[str, Any]]:
        """Replace the faults of one scope (global, token, recipient, or both).

        `error_status` without `error_rate` fails every request, with
        `error_message` as the body's message if given. `retry_after`
        (seconds, or a raw header string) is sent with 429s only.
        `media_not_found_rate`: media endpoints answer 404 "Media with specified
        id not found" at that rate. Returns the whole fault configuration.
        """
        body: dict[str, Any] = {"token": token, "to": to}
        fields = {
            "latency_ms": latency_ms,
            "latency_jitter_ms": latency_jitter_ms,
            "error_rate": error_rate,
            "error_status": error_status,
            "error_message": error_message,
            "retry_after": retry_after,
            "rate_limit_per_s": rate_limit_per_s,
            "hang": hang,
            "hang_rate": hang_rate,
            "hang_after_send": hang_after_send,
            "media_not_found_rate": media_not_found_rate,
        }
        body.update({k: v for k, v in fields.items() if v is not None})
        faults: list[dict[str, Any]] = self._json(self._http.post("/_sim/faults", json=body))[
            "faults"
        ]
        return faults

    def clear_faults(self, *, token: str | None = None, to: str | None = None) -> None:
        """Clear one scope's faults, or every fault when neither is given."""
        params = {k: v for k, v in (("token", token), ("to", to)) if v is not None}
        self._json(self._http.delete("/_sim/faults", params=params))

    def reset(self) -> None:
        """Clear faults, records, counters, channels and webhooks (sequence numbers
        keep growing; the token mode returns to the start-up one)."""
        self._json(self._http.post("/_sim/reset"))

    # -- channels -------------------------------------------------------------

    def register_channel(
        self,
        token: str | None = None,
        *,
        channel_id: str | None = None,
        phone: str | None = None,
        name: str | None = None,
        status: str = "AUTH",
    ) -> ChannelInfo:
        """Register a channel (a random token if none); returns it, token included."""
        body = _drop_none({"token": token, "channel_id": channel_id, "phone": phone,
                           "name": name, "status": status})
        return ChannelInfo.from_json(self._json(self._http.post("/_sim/channels", json=body)))

    def channels(self) -> list[ChannelInfo]:
        data = self._json(self._http.get("/_sim/channels"))
        return [ChannelInfo.from_json(c) for c in data["channels"]]

    def token_policy(self) -> tuple[bool, int]:
        """(accept_any_token, unknown_token_status)."""
        data = self._json(self._http.get("/_sim/channels"))
        return bool(data["accept_any_token"]), int(data["unknown_token_status"])

    def set_token_policy(
        self, *, accept_any_token: bool | None = None, unknown_token_status: int | None = None
    ) -> None:
        """Switch modes at runtime (a reset restores the start-up mode)."""
        body = _drop_none({"accept_any_token": accept_any_token,
                           "unknown_token_status": unknown_token_status})
        self._json(self._http.patch("/_sim/channels", json=body))

    def remove_channel(self, token: str) -> None:
        self._json(self._http.delete("/_sim/channels", params={"token": token}))

    # -- webhooks -------------------------------------------------------------

    def set_webhooks(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        mode: str | None = None,
        headers: Mapping[str, str] | None = None,
        events: Events | None = None,
        webhooks: Sequence[Mapping[str, Any]] | None = None,
        callback_backoff_delay_ms: float | None = None,
        max_callback_backoff_delay_ms: float | None = None,
        delays_ms: Mapping[str, float] | None = None,
        statuses_method: str | None = None,
        echo: str | None = None,
        channel_id: str | None = None,
    ) -> dict[str, Any]:
        """Configure one scope (`token`, or None: every token without its own).

        `url` (+ mode, headers, events) for one webhook, or `webhooks` (Whapi's
        list of {url, mode, headers, events}). `events` as (type, method)
        pairs; omitted: statuses post and put. See outbox.providers.simulator.settings
        for the rest and the defaults. Returns the whole configuration.
        """
        body = _drop_none({
            "token": token, "url": url, "mode": mode,
            "headers": dict(headers) if headers is not None else None,
            "events": _events_json(events),
            "webhooks": [dict(w) for w in webhooks] if webhooks is not None else None,
            "callback_backoff_delay_ms": callback_backoff_delay_ms,
            "max_callback_backoff_delay_ms": max_callback_backoff_delay_ms,
            "delays_ms": dict(delays_ms) if delays_ms is not None else None,
            "statuses_method": statuses_method, "echo": echo, "channel_id": channel_id,
        })
        config: dict[str, Any] = self._json(self._http.post("/_sim/webhooks", json=body))
        return config

    def webhooks(self) -> dict[str, Any]:
        """The configurations (header names only) and counters, as JSON."""
        config: dict[str, Any] = self._json(self._http.get("/_sim/webhooks"))
        return config

    def webhook_stats(self) -> WebhookStats:
        return WebhookStats.from_json(self._json(self._http.get("/_sim/webhooks"))["stats"])

    def clear_webhooks(self, token: str | None = None) -> None:
        """Remove one scope (or all) and cancel its pending deliveries."""
        params = {"token": token} if token is not None else {}
        self._json(self._http.delete("/_sim/webhooks", params=params))

    def webhook_log(
        self, since: int = 0, *, token: str | None = None, limit: int | None = None
    ) -> list[DeliveryAttempt]:
        """Delivery attempts with seq > since, in order (all pages unless `limit`)."""
        out: list[DeliveryAttempt] = []
        while True:
            want = 10_000 if limit is None else min(10_000, limit - len(out))
            if want <= 0:
                return out
            params: dict[str, str | int] = {"since": since, "limit": want}
            if token is not None:
                params["token"] = token
            page = self._json(self._http.get("/_sim/webhooks/log", params=params))
            out.extend(DeliveryAttempt.from_json(a) for a in page["attempts"])
            since = int(page["next_since"])
            if not page["has_more"]:
                return out

    def wait_webhook_attempts(
        self, count: int, *, since: int = 0, token: str | None = None, timeout: float = 10.0
    ) -> list[DeliveryAttempt]:
        """Poll the log until it holds at least `count` attempts (or raise)."""
        deadline = time.monotonic() + timeout
        while True:
            attempts = self.webhook_log(since, token=token)
            if len(attempts) >= count:
                return attempts
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(attempts)} of {count} webhook attempts after {timeout}s")
            time.sleep(0.02)

    # -- events on demand -----------------------------------------------------

    def _inject(self, path: str, body: Mapping[str, Any], wait: bool,
                wait_timeout_s: float) -> Injection:
        full = {**_drop_none(body), "wait": wait, "wait_timeout_s": wait_timeout_s}
        timeout = max(self._http.timeout.read or 30.0, wait_timeout_s + 5)
        resp = self._http.post(path, json=full, timeout=timeout)
        return Injection.from_json(self._json(resp))

    def inbound(
        self,
        token: str | None = None,
        *,
        kind: str = "text",
        text: str | None = None,
        chat_id: str | None = None,
        phone: str | None = None,
        country_rules: bool | None = None,
        sender: str | None = None,
        sender_name: str | None = None,
        from_me: bool = False,
        source: str | None = None,
        method: str = "post",
        content: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        quoted: str | None = None,
        context: Mapping[str, Any] | None = None,
        chat_name: str | None = None,
        timestamp: int | None = None,
        wait: bool = False,
        wait_timeout_s: float = 10.0,
    ) -> Injection:
        """A message into the channel (POST /_sim/inbound); `kind` is its Whapi
        `type` (schema MessageType: text, image, voice, location, poll, ...).

        `sender`/`sender_name` are Whapi's `from`/`from_name` (groups).
        `from_me=True`: typed on the phone (source "mobile"). `method="put"`:
        an offline backlog (messages.put).
        """
        body = {"token": token, "type": kind, "text": text, "chat_id": chat_id,
                "phone": phone, "country_rules": country_rules, "from": sender,
                "from_name": sender_name, "from_me": from_me or None, "source": source,
                "method": method, "content": dict(content) if content is not None else None,
                "id": message_id, "quoted": quoted,
                "context": dict(context) if context is not None else None,
                "chat_name": chat_name, "timestamp": timestamp}
        return self._inject("/_sim/inbound", body, wait, wait_timeout_s)

    def inbound_many(
        self,
        token: str | None,
        messages: Sequence[Mapping[str, Any]],
        *,
        method: str = "post",
        wait: bool = False,
        wait_timeout_s: float = 10.0,
    ) -> Injection:
        """Several messages in one body (Whapi's backlogs do that); each item
        takes the JSON fields of POST /_sim/inbound (`from`, not `sender`)."""
        body = {"token": token, "method": method, "messages": [dict(m) for m in messages]}
        return self._inject("/_sim/inbound", body, wait, wait_timeout_s)

    def action(
        self,
        token: str | None,
        target: str,
        action: str,
        *,
        emoji: str | None = None,
        text: str | None = None,
        edited_type: str | None = None,
        edited_content: Mapping[str, Any] | None = None,
        votes: Sequence[str] | None = None,
        ephemeral: int | None = None,
        comment: str | None = None,
        event_response: Mapping[str, Any] | None = None,
        chat_id: str | None = None,
        phone: str | None = None,
        sender: str | None = None,
        sender_name: str | None = None,
        from_me: bool = False,
        method: str = "post",
        message_id: str | None = None,
        wait: bool = False,
        wait_timeout_s: float = 10.0,
    ) -> Injection:
        """A `type: "action"` message on `target` (POST /_sim/action): reaction
        (emoji; "" removes), edit/edited (text or edited_content), delete,
        vote, pin, unpin, ephemeral, comment, event_response."""
        body = {"token": token, "target": target, "action": action, "emoji": emoji,
                "text": text, "edited_type": edited_type,
                "edited_content": dict(edited_content) if edited_content is not None else None,
                "votes": list(votes) if votes is not None else None, "ephemeral": ephemeral,
                "comment": comment,
                "event_response": dict(event_response) if event_response is not None else None,
                "chat_id": chat_id, "phone": phone, "from": sender, "from_name": sender_name,
                "from_me": from_me or None, "method": method, "id": message_id}
        return self._inject("/_sim/action", body, wait, wait_timeout_s)

    def message_update(
        self,
        token: str | None,
        message_id: str,
        *,
        text: str | None = None,
        after: Mapping[str, Any] | None = None,
        changes: Sequence[str] | None = None,
        trigger: bool = True,
        chat_id: str | None = None,
        wait: bool = False,
        wait_timeout_s: float = 10.0,
    ) -> Injection:
        """messages.patch (POST /_sim/messages_updates): before/after/changes."""
        body = {"token": token, "id": message_id, "text": text,
                "after": dict(after) if after is not None else None,
                "changes": list(changes) if changes is not None else None,
                "trigger": trigger, "chat_id": chat_id}
        return self._inject("/_sim/messages_updates", body, wait, wait_timeout_s)

    def messages_removed(
        self,
        token: str | None,
        message_ids: Sequence[str],
        *,
        all_in_chat: str | None = None,
        wait: bool = False,
        wait_timeout_s: float = 10.0,
    ) -> Injection:
        """messages.delete (POST /_sim/messages_removed)."""
        body = {"token": token, "ids": list(message_ids), "all_in_chat": all_in_chat}
        return self._inject("/_sim/messages_removed", body, wait, wait_timeout_s)

    def status(
        self,
        token: str | None,
        message_ids: str | Sequence[str],
        status: str,
        *,
        method: str = "post",
        errors: Sequence[Mapping[str, Any]] | None = None,
        recipient_id: str | None = None,
        viewer_id: str | None = None,
        code: int | None = None,
        wait: bool = False,
        wait_timeout_s: float = 10.0,
    ) -> Injection:
        """statuses.post/put for message ids (POST /_sim/statuses)."""
        ids = [message_ids] if isinstance(message_ids, str) else list(message_ids)
        body = {"token": token, "ids": ids, "status": status, "method": method,
                "errors": [dict(e) for e in errors] if errors is not None else None,
                "recipient_id": recipient_id, "viewer_id": viewer_id, "code": code}
        return self._inject("/_sim/statuses", body, wait, wait_timeout_s)

    def call(
        self,
        token: str | None,
        *,
        chat_id: str | None = None,
        phone: str | None = None,
        sender: str | None = None,
        status: str = "ringing",
        video: bool = False,
        group: bool | None = None,
        offline: bool = False,
        wait: bool = False,
        wait_timeout_s: float = 10.0,
    ) -> Injection:
        """calls.post (POST /_sim/calls)."""
        body = {"token": token, "chat_id": chat_id, "phone": phone, "from": sender,
                "status": status, "video": video, "group": group, "offline": offline}
        return self._inject("/_sim/calls", body, wait, wait_timeout_s)

    def chat(
        self,
        token: str | None,
        *,
        method: str = "post",
        chat_id: str | None = None,
        phone: str | None = None,
        archive: bool | None = None,
        name: str | None = None,
        unread: int | None = None,
        pin: bool | None = None,
        mute: bool | None = None,
        before: Mapping[str, Any] | None = None,
        wait: bool = False,
        wait_timeout_s: float = 10.0,
    ) -> Injection:
        """chats.post/put/patch/delete (POST /_sim/chats); patch with archive=True
        is "the chat was archived on the phone"."""
        body = {"token": token, "method": method, "chat_id": chat_id, "phone": phone,
                "archive": archive, "name": name, "unread": unread, "pin": pin, "mute": mute,
                "before": dict(before) if before is not None else None}
        return self._inject("/_sim/chats", body, wait, wait_timeout_s)

    def channel_health(
        self, token: str, status: str, *, wait: bool = False, wait_timeout_s: float = 10.0
    ) -> Injection:
        """channel.post health (POST /_sim/channel); the channel takes the state:
        anything but AUTH makes sends answer 401."""
        return self._inject("/_sim/channel", {"token": token, "status": status}, wait,
                            wait_timeout_s)

    def login(self, token: str, *, wait: bool = False, wait_timeout_s: float = 10.0) -> Injection:
        """users.post: the channel is logged in (AUTH) again."""
        return self._inject("/_sim/users", {"token": token, "method": "post"}, wait,
                            wait_timeout_s)

    def logout(self, token: str, *, wait: bool = False, wait_timeout_s: float = 10.0) -> Injection:
        """users.delete: the channel is logged out (QR); sends answer 401 until login()."""
        return self._inject("/_sim/users", {"token": token, "method": "delete"}, wait,
                            wait_timeout_s)

    def raw(
        self,
        token: str | None,
        event_type: str,
        method: str = "post",
        *,
        body: Any = None,
        raw: str | None = None,
        wait: bool = False,
        wait_timeout_s: float = 10.0,
    ) -> Injection:
        """Post `body` (any JSON, no envelope added) or `raw` (a string, byte for
        byte) as event `event_type`.`method` (POST /_sim/raw)."""
        payload: dict[str, Any] = {"token": token, "type": event_type, "method": method}
        if raw is not None:
            payload["raw"] = raw
        else:
            payload["body"] = body
        full = {**payload, "wait": wait, "wait_timeout_s": wait_timeout_s}
        if token is None:
            del full["token"]
        timeout = max(self._http.timeout.read or 30.0, wait_timeout_s + 5)
        return Injection.from_json(self._json(self._http.post("/_sim/raw", json=full,
                                                              timeout=timeout)))


class SimulatorStartError(RuntimeError):
    """The simulator subprocess died or never became healthy."""


@dataclass(slots=True)
class SimulatorHandle:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        """Everything the subprocess printed so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def control(self) -> SimulatorControl:
        return SimulatorControl(self.url)


_LISTENING = re.compile(re.escape(LISTENING_PREFIX) + r"(http://\S+)")


@contextlib.contextmanager
def start_simulator(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 20.0,
    extra_args: tuple[str, ...] = (),
    accept_any_token: bool = True,
) -> Iterator[SimulatorHandle]:
    """Run `python -m outbox.providers.simulator` in a subprocess for the block.

    `port=0` lets the OS pick a free port; the handle's `.url` is the real
    one. Waits (at most `startup_timeout` s) until `/health` answers, and
    raises `SimulatorStartError` with the subprocess output if it dies or
    never gets there. Terminates it on exit.

    `accept_any_token=True` (the default here, unlike the command line): any
    Bearer token becomes a channel on first use, so callers need no
    registration step. False: strict, like Whapi (register tokens with
    `SimulatorControl.register_channel`; others get 401).
    """
    fd, log_name = tempfile.mkstemp(prefix="whapi-sim-", suffix=".log")
    log_path = Path(log_name)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    cmd = [sys.executable, "-m", "outbox.providers.simulator", "--host", host, "--port", str(port)]
    if accept_any_token:
        cmd.append("--accept-any-token")
    with os.fdopen(fd, "wb") as log_file:
        proc = subprocess.Popen(
            [*cmd, *extra_args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    handle = SimulatorHandle(url="", port=port, process=proc, log_path=log_path)
    try:
        _wait_ready(handle, startup_timeout)
        yield handle
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            log_path.unlink()


def _wait_ready(handle: SimulatorHandle, startup_timeout: float) -> None:
    deadline = time.monotonic() + startup_timeout
    with httpx.Client(timeout=1.0, trust_env=False) as http:
        while True:
            rc = handle.process.poll()
            if rc is not None:
                raise SimulatorStartError(
                    f"simulator exited with code {rc} before it was ready; output:\n"
                    f"{handle.output()[-4000:]}"
                )
            if not handle.url:
                m = _LISTENING.search(handle.output())
                if m:
                    handle.url = m.group(1)
                    handle.port = int(handle.url.rsplit(":", 1)[1])
            if handle.url:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{handle.url}/health").status_code == 200:
                        return
            if time.monotonic() > deadline:
                raise SimulatorStartError(
                    f"simulator not healthy after {startup_timeout:g}s; output:\n"
                    f"{handle.output()[-4000:]}"
                )
            time.sleep(0.05)
