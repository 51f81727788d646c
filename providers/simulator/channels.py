"""The simulator's channels: which tokens exist, and whether each is logged in.

Whapi gives every channel a token, a channel id (`MANTIS-M72HC`) and a
phone; a request with a token no channel has is refused, and a channel that
is logged out (users.delete, health QR) answers 401 to sends until someone
logs in again. The registry mirrors that.

Two modes:

* strict (the default of `python -m outbox.providers.simulator`): only tokens
  registered with `POST /_sim/channels` exist; any other token is refused
  with `unknown_token_status` (401 by default; Whapi's own tooling also
  documents 404 "Channel not found" for a bad token, so 404 can be chosen);
* accept_any_token (what `start_simulator()` selects, so the suite, the demo
  and the bench need no registration step): a token seen for the first time
  becomes a channel, with a channel id and phone derived from it.

`POST /_sim/reset` forgets every channel and restores the start-up mode.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Final

from outbox.providers.simulator.payloads import HEALTH_CODES

__all__ = ["Channel", "ChannelConfigError", "ChannelRegistry", "derived_channel_id"]

TOKEN_PATTERN: Final = re.compile(r"^[A-Za-z0-9._~+/=-]{1,200}$")
UNKNOWN_TOKEN_STATUSES: Final = (401, 404)


class ChannelConfigError(ValueError):
    """A /_sim/channels body that makes no sense."""


def derived_channel_id(token: str) -> str:
    """A Whapi-looking channel id that depends only on the token (`SIMUL-3FA9C`)."""
    return "SIMUL-" + hashlib.sha256(token.encode()).hexdigest()[:5].upper()


def _derived_phone(token: str) -> str:
    return "1555" + str(int(hashlib.sha256(b"phone:" + token.encode()).hexdigest(), 16))[:7]


@dataclass(slots=True)
class Channel:
    token: str = field(repr=False)
    channel_id: str
    phone: str  # the channel's own number, digits only
    name: str
    status: str = "AUTH"  # schema ChannelStatus.text
    started_at: float = field(default_factory=time.time)
    auto: bool = False  # registered on first use (accept_any_token)

    @property
    def can_send(self) -> bool:
        return self.status == "AUTH"

    def as_json(self) -> dict[str, Any]:
        return {"token": self.token, "channel_id": self.channel_id, "phone": self.phone,
                "name": self.name, "status": self.status, "auto": self.auto}


class ChannelRegistry:
    """Token → Channel. Lookups are one dict access: it sits on the send path."""

    def __init__(self, *, accept_any_token: bool = False, unknown_token_status: int = 401) -> None:
        self._start = (accept_any_token, unknown_token_status)
        self.accept_any_token = accept_any_token
        self.unknown_token_status = unknown_token_status
        self.channels: dict[str, Channel] = {}

    def reset(self) -> None:
        self.channels.clear()
        self.accept_any_token, self.unknown_token_status = self._start

    def resolve(self, token: str) -> Channel | None:
        """The token's channel; in accept_any_token mode, made on first use."""
        channel = self.channels.get(token)
        if channel is None and self.accept_any_token:
            channel = self.channels[token] = Channel(
                token=token, channel_id=derived_channel_id(token), phone=_derived_phone(token),
                name="Simulator", auto=True)
        return channel

    def register(self, body: Any) -> Channel:
        """`POST /_sim/channels`: {token?, channel_id?, phone?, name?, status?}."""
        if not isinstance(body, dict):
            raise ChannelConfigError("body must be a JSON object")
        unknown = set(body) - {"token", "channel_id", "phone", "name", "status"}
        if unknown:
            raise ChannelConfigError(f"unknown field(s): {', '.join(sorted(unknown))}")
        token = body.get("token") or secrets.token_hex(16)
        if not isinstance(token, str) or not TOKEN_PATTERN.match(token):
            raise ChannelConfigError("token must be 1-200 URL-safe characters")
        for name in ("channel_id", "phone", "name"):
            value = body.get(name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ChannelConfigError(f"{name} must be a non-empty string")
        phone = body.get("phone")
        if phone is not None:
            phone = "".join(ch for ch in phone if ch.isdigit())
            if not 7 <= len(phone) <= 15:
                raise ChannelConfigError("phone must have 7 to 15 digits")
        status = body.get("status", "AUTH")
        if status not in HEALTH_CODES:
            raise ChannelConfigError(f"status must be one of {', '.join(HEALTH_CODES)}")
        channel = Channel(
            token=token, channel_id=body.get("channel_id") or derived_channel_id(token),
            phone=phone or _derived_phone(token), name=body.get("name") or "Simulator",
            status=status)
        self.channels[token] = channel
        return channel

    def configure(self, body: Any) -> None:
        """`PATCH /_sim/channels`: {accept_any_token?, unknown_token_status?}."""
        if not isinstance(body, dict):
            raise ChannelConfigError("body must be a JSON object")
        unknown = set(body) - {"accept_any_token", "unknown_token_status"}
        if unknown:
            raise ChannelConfigError(f"unknown field(s): {', '.join(sorted(unknown))}")
        accept = body.get("accept_any_token", self.accept_any_token)
        status = body.get("unknown_token_status", self.unknown_token_status)
        if not isinstance(accept, bool):
            raise ChannelConfigError("accept_any_token must be true or false")
        if status not in UNKNOWN_TOKEN_STATUSES or isinstance(status, bool):
            raise ChannelConfigError("unknown_token_status must be 401 or 404")
        self.accept_any_token, self.unknown_token_status = accept, status

    def as_json(self) -> dict[str, Any]:
        return {"accept_any_token": self.accept_any_token,
                "unknown_token_status": self.unknown_token_status,
                "channels": [c.as_json() for c in self.channels.values()]}
