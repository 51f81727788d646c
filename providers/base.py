"""The one small interface every provider client implements.

The dispatcher knows nothing about HTTP: it hands a provider an
`OutgoingMessage` and gets back a `SendResult` whose `outcome` says what to
do with the row. Classification is the provider's job because only it knows
what its status codes mean (see shared/WHAPI.md for Whapi's table).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


class Outcome(enum.StrEnum):
    """What happened to one send, from the queue's point of view."""

    SENT = "sent"
    """The provider accepted the message; `wa_message_id` is set."""
    TRANSIENT = "transient"
    """Try again later with backoff (5xx, timeout, connection error)."""
    RATE_LIMITED = "rate_limited"
    """The channel is over its rate: pause the channel, don't spend an attempt."""
    CHANNEL_PROBLEM = "channel_problem"
    """The channel itself is unusable (logged out, trial over, bad token)."""
    PERMANENT = "permanent"
    """This message can never be sent as it is (bad request, forbidden, too large)."""


class ChannelProblem(enum.StrEnum):
    UNAUTHORIZED = "unauthorized"  # 401: WhatsApp session logged out
    TRIAL_LIMIT = "trial_limit"  # 402: trial quota exhausted
    NOT_FOUND = "not_found"  # 404 outside the media endpoints: base URL or token names nothing


MESSAGE_TYPES = ("text", "image", "video", "document", "audio")


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to send.

    `to` is a WhatsApp chat id (`<digits>@s.whatsapp.net` or `<id>@g.us`).
    `payload` holds the endpoint's fields other than `to`, exactly as the
    provider expects them (e.g. `{"body": "hi"}` for text,
    `{"media": url, "caption": "..."}` for image).
    """

    to: str
    message_type: str
    payload: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    wa_message_id: str | None = None
    # Seconds to wait, from a Retry-After header; None when the provider gave none.
    retry_after: float | None = None
    channel_problem: ChannelProblem | None = None
    # Short, human-readable, safe to store and log: never the token, never the body.
    error: str | None = None
    status_code: int | None = None
    # True when the request may have reached the provider even though we saw
    # no success (timeout after sending, connection dropped mid-response): a
    # retry may produce a duplicate, and we count it.
    ambiguous: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    """A provider client. One instance per process, shared by all channels."""

    async def send(self, *, base_url: str, token: str, message: OutgoingMessage) -> SendResult:
        """Send one message. Never raises for provider or network failures:
        every outcome is a classified `SendResult`."""
        ...

    async def aclose(self) -> None: ...
