"""The simulator's fault knobs, set per scope through `POST /_sim/faults`.

Scopes: global (no `token`, no `to`), one token, one recipient, or one token
and recipient. For each request the scopes that match are merged field by
field, most specific last (global < token < recipient < token+recipient).
Posting a scope replaces that scope's fields.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["FAULT_FIELDS", "MAX_HANG_S", "FaultConfigError", "FaultScopes", "validate_faults"]

#: Accepted fault fields.
FAULT_FIELDS: Final = (
    "latency_ms",
    "latency_jitter_ms",
    "error_rate",
    "error_status",
    "error_message",
    "retry_after",
    "rate_limit_per_s",
    "hang",
    "hang_rate",
    "hang_after_send",
    "media_not_found_rate",
)

#: A hang ends when the client disconnects, or after this many seconds.
MAX_HANG_S: Final = 600.0


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
        elif name in ("error_rate", "hang_rate", "media_not_found_rate"):
            out[name] = _number(name, value, lo=0, hi=1)
        elif name == "error_status":
            status = _number(name, value, lo=100, hi=599)
            if status != int(status) or status < 300:
                raise FaultConfigError("error_status must be an integer HTTP error status")
            out[name] = int(status)
        elif name == "error_message":
            if not isinstance(value, str) or not 0 < len(value) <= 500:
                raise FaultConfigError("error_message must be text of 1 to 500 characters")
            out[name] = value
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


@dataclass(slots=True)
class Scope:
    token: str | None
    to: str | None
    fields: dict[str, Any]


class FaultScopes:
    """The fault configuration and the per-token rate windows."""

    def __init__(self) -> None:
        self.scopes: dict[tuple[str | None, str | None], Scope] = {}
        self.windows: dict[str, deque[float]] = {}

    def set(self, token: str | None, chat_id: str | None, fields: dict[str, Any]) -> None:
        self.scopes[(token, chat_id)] = Scope(token=token, to=chat_id, fields=fields)

    def clear(self, token: str | None = None, chat_id: str | None = None) -> None:
        if token is None and chat_id is None:
            self.scopes.clear()
            self.windows.clear()
        else:
            self.scopes.pop((token, chat_id), None)

    def effective(self, token: str, chat_id: str | None) -> dict[str, Any] | None:
        scopes = self.scopes
        if not scopes:
            return None
        merged: dict[str, Any] = {}
        for key in ((None, None), (token, None), (None, chat_id), (token, chat_id)):
            scope = scopes.get(key)
            if scope is not None:
                merged.update(scope.fields)
        return merged or None

    def as_json(self) -> list[dict[str, Any]]:
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
