"""A channel's send limits: set, shown with today's usage, summarised.

Shared by `outbox channel limits`, `PATCH /v1/channels/{id}` and `outbox
status`. The claim enforces them (db/queries.py CLAIM; docs/pacing.md);
this module only checks and stores what an operator asks for. Every limit
is optional: none set is unlimited, as a channel without limits always was.

A change names only the limits it changes (`None` clears one); the rest
stay. Today's usage stays too: lowering a daily cap below what went out
today stops the channel for the rest of the day.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from outbox.db import pacing_queries as q
from outbox.errors import ChannelNotFound, InvalidInput
from outbox.message_types import parse_channel_id

MAX_PER_SECOND = 1000.0
MAX_COUNT = 1_000_000_000
MAX_BURST = 100_000
MAX_CHAT_GAP_SECONDS = 86_400.0
MAX_TYPING_TIME = 60  # Whapi's bound (typing_time 0-60 s)
MAX_WARMUP_FACTOR = 10.0

#: What a change may name (the keyword arguments of `set_limits`).
FIELDS = ("per_second", "burst", "per_minute", "per_day", "new_chats_per_day", "chat_gap",
          "typing_time", "timezone", "warmup")


@dataclass(frozen=True, slots=True)
class Warmup:
    """A new number's daily cap: `start` the first day, times `factor` each
    day after, up to `ceiling`. A new-chat cap grows in step with it."""

    start: int
    factor: float
    ceiling: int

    def __str__(self) -> str:
        return f"{self.start},x{self.factor:g},{self.ceiling}"

    def cap_on(self, days: int) -> int:
        """The cap `days` after the first day (as the claim computes it)."""
        exponent = math.log(self.start) + math.log(self.factor) * max(0, days)
        return int(min(float(self.ceiling), math.floor(math.exp(min(700.0, exponent)) + 1e-9)))

    def new_chats_on(self, days: int, new_chats_per_day: int) -> int:
        """The new-chat cap `days` after the first day: grown in step with
        the daily cap, rounded up (as the claim computes it)."""
        return math.ceil(new_chats_per_day * self.cap_on(days) / self.ceiling - 1e-9)


@dataclass(frozen=True, slots=True)
class Limits:
    per_second: float | None = None
    burst: int | None = None
    per_minute: int | None = None
    per_day: int | None = None
    new_chats_per_day: int | None = None
    chat_gap_seconds: float | None = None
    typing_time_seconds: int | None = None
    timezone: str = "UTC"
    warmup: Warmup | None = None
    warmup_from: date | None = None  # the warm-up's first day (local)

    @property
    def paced(self) -> bool:
        return any(v is not None for v in (
            self.per_second, self.per_minute, self.per_day, self.new_chats_per_day,
            self.chat_gap_seconds, self.warmup))


@dataclass(frozen=True, slots=True)
class Usage:
    """A channel's budget now, as the next claim will count it."""

    day: date
    day_used: int  # rows claimed today (local day)
    day_cap: int | None  # today's cap: per_day and the warm-up's (None: none)
    new_chats_used: int
    new_chats_cap: int | None  # today's: new_chats_per_day, grown by the warm-up
    new_chats_left: int | None
    rows_left: int | None  # rows a claim may take right now (None: no row limit)
    tokens: float | None  # the bucket now (None: no per-second limit)
    minute_used: int


@dataclass(frozen=True, slots=True)
class ChannelLimits:
    channel_id: uuid.UUID
    limits: Limits
    usage: Usage | None  # None: no limits were ever set

    def as_dict(self) -> dict[str, Any]:
        lim = self.limits
        out: dict[str, Any] = {
            "channel_id": str(self.channel_id),
            "per_second": lim.per_second, "burst": lim.burst, "per_minute": lim.per_minute,
            "per_day": lim.per_day, "new_chats_per_day": lim.new_chats_per_day,
            "chat_gap_seconds": lim.chat_gap_seconds, "typing_time": lim.typing_time_seconds,
            "timezone": lim.timezone,
            "warmup": str(lim.warmup) if lim.warmup else None,
            "warmup_from": lim.warmup_from.isoformat() if lim.warmup_from else None,
            "usage": None,
        }
        if self.usage is not None:
            u = asdict(self.usage)
            u["day"] = self.usage.day.isoformat()
            out["usage"] = u
        return out


@dataclass(frozen=True, slots=True)
class PacingState:
    """A paced channel for `outbox status` and /metrics."""

    channel_id: uuid.UUID
    rows_left: int | None
    new_chats_left: int | None
    day_left: int | None
    held_back: int  # due rows the claim skips: channel out of budget, or chat (cap, gap)


def get_limits(session: Session, channel_id: uuid.UUID | str, *,
               workspace_id: str | None = None) -> ChannelLimits:
    cid = _channel(session, channel_id, workspace_id)
    row = session.execute(text(q.CHANNEL_PACING), {"channel_id": cid}).one_or_none()
    if row is None:
        return ChannelLimits(cid, Limits(), None)
    warmup = (Warmup(row.warmup_start, row.warmup_factor, row.warmup_ceiling)
              if row.warmup_start is not None else None)
    limits = Limits(row.per_second, row.burst, row.per_minute, row.per_day,
                    row.new_chats_per_day, row.chat_gap_seconds, row.typing_time_seconds,
                    row.timezone, warmup, row.warmup_from)
    usage = Usage(row.day, int(row.day_used), _int(row.day_cap), int(row.day_new_used),
                  _int(row.new_chats_cap), _int(row.new_chats_left), _int(row.rows_left),
                  float(row.tokens) if row.tokens is not None else None, int(row.minute_used))
    return ChannelLimits(cid, limits, usage)


def set_limits(session: Session, channel_id: uuid.UUID | str, *,
               workspace_id: str | None = None, **changes: Any) -> ChannelLimits:
    """Change the named limits (None clears one) in the caller's transaction.
    Values may be text, as a command line gives them: "3s", "50,x1.5,1000"."""
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise InvalidInput(f"unknown limit {unknown[0]!r}; known: {', '.join(FIELDS)}",
                           field=unknown[0])
    current = get_limits(session, channel_id, workspace_id=workspace_id)
    lim = current.limits
    new: dict[str, Any] = {
        "per_second": lim.per_second, "burst": lim.burst, "per_minute": lim.per_minute,
        "per_day": lim.per_day, "new_chats_per_day": lim.new_chats_per_day,
        "chat_gap_seconds": lim.chat_gap_seconds, "typing_time_seconds": lim.typing_time_seconds,
        "timezone": lim.timezone, "warmup": lim.warmup,
    }
    for name, value in changes.items():
        match name:
            case "per_second":
                new["per_second"] = _number(value, name, 0.0, MAX_PER_SECOND, positive=True)
                if "burst" not in changes:  # a new rate, its default burst
                    new["burst"] = None
            case "burst":
                new["burst"] = _count(value, name, 1, MAX_BURST)
            case "per_minute" | "per_day":
                new[name] = _count(value, name, 1, MAX_COUNT)
            case "new_chats_per_day":
                new[name] = _count(value, name, 0, MAX_COUNT)
            case "chat_gap":
                new["chat_gap_seconds"] = (None if value is None
                                           else parse_duration(value, field=name))
            case "typing_time":
                seconds = None if value is None else parse_duration(value, field=name)
                if seconds is not None and (seconds != int(seconds)
                                            or not 0 <= seconds <= MAX_TYPING_TIME):
                    raise InvalidInput(f"typing_time must be whole seconds from 0 to "
                                       f"{MAX_TYPING_TIME}", field=name)
                new["typing_time_seconds"] = None if seconds is None else int(seconds)
            case "timezone":
                new["timezone"] = _timezone(session, value)
            case "warmup":
                new["warmup"] = None if value is None else parse_warmup(value)
    if new["per_second"] is None:
        if "burst" in changes and new["burst"] is not None:
            raise InvalidInput("a burst needs a per-second rate (--per-second)", field="burst")
        new["burst"] = None
    elif new["burst"] is None:
        new["burst"] = max(1, math.ceil(new["per_second"]))
    warmup: Warmup | None = new.pop("warmup")
    warmup_from = lim.warmup_from if warmup == lim.warmup else None
    if warmup is not None and warmup_from is None:
        warmup_from = session.execute(text(q.LOCAL_TODAY),
                                      {"timezone": new["timezone"]}).scalar_one()
    session.execute(text(q.SET_LIMITS), {
        "channel_id": current.channel_id, **new,
        "warmup_start": warmup.start if warmup else None,
        "warmup_factor": warmup.factor if warmup else None,
        "warmup_ceiling": warmup.ceiling if warmup else None,
        "warmup_from": warmup_from if warmup else None,
    })
    return get_limits(session, current.channel_id)


def pacing_overview(session: Session, *, workspace_id: str | None = None) -> list[PacingState]:
    return [PacingState(r.channel_id, _int(r.rows_left), _int(r.new_chats_left),
                        None if r.day_cap is None else max(0, int(r.day_cap) - int(r.day_used)),
                        int(r.held_back))
            for r in session.execute(text(q.PACING_OVERVIEW), {"workspace_id": workspace_id})]


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object, *, field: str) -> float:
    """Seconds from a number or "500ms", "3s", "2m", "1h"; positive for a
    gap, at most a day."""
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be a duration such as 3s", field=field)
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        seconds = float(m.group(1)) * _UNIT[m.group(2)]
    else:
        raise InvalidInput(f"{field} must be a duration such as 3s, 500ms or 2m", field=field)
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_CHAT_GAP_SECONDS:
        raise InvalidInput(f"{field} must be between 0 and {MAX_CHAT_GAP_SECONDS:g} seconds",
                           field=field)
    if field == "chat_gap" and seconds == 0:
        raise InvalidInput("chat_gap must be positive (clear it to have none)", field=field)
    return seconds


_WARMUP = re.compile(r"\s*(\d+)\s*,\s*x\s*(\d+(?:\.\d+)?)\s*,\s*(\d+)\s*")


def parse_warmup(value: object) -> Warmup:
    """"START,xFACTOR,CEILING", e.g. "50,x1.5,1000": 50 the first day, half
    as many again each day, never more than 1000."""
    m = _WARMUP.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidInput("warmup must read START,xFACTOR,CEILING, e.g. 50,x1.5,1000",
                           field="warmup")
    start, factor, ceiling = int(m.group(1)), float(m.group(2)), int(m.group(3))
    if not 1 <= start <= ceiling <= MAX_COUNT:
        raise InvalidInput("warmup: START must be at least 1 and at most CEILING",
                           field="warmup")
    if not 1.0 < factor <= MAX_WARMUP_FACTOR:
        raise InvalidInput(f"warmup: FACTOR must be above 1 and at most "
                           f"{MAX_WARMUP_FACTOR:g}", field="warmup")
    return Warmup(start, factor, ceiling)


def _number(value: object, field: str, low: float, high: float, *,
            positive: bool = False) -> float | None:
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, int | float | str) and not isinstance(
            value, bool) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < low or number > high or (
            positive and number <= 0):
        raise InvalidInput(f"{field} must be a number above {low:g} and at most {high:g}",
                           field=field)
    return number


def _count(value: object, field: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"{field} must be a whole number from {low} to {high}", field=field)
    return value


def _timezone(session: Session, value: object) -> str:
    if value is None:
        return "UTC"
    if (not isinstance(value, str) or not value or len(value) > 64
            or not session.execute(text(q.TIMEZONE_KNOWN), {"name": value}).scalar_one()):
        raise InvalidInput(f"unknown time zone {str(value)[:64]!r} (an IANA name such as "
                           "Europe/Berlin)", field="timezone")
    return value


def _channel(session: Session, channel_id: uuid.UUID | str, workspace_id: str | None
             ) -> uuid.UUID:
    cid = parse_channel_id(channel_id)
    found = session.execute(text(q.CHANNEL_FOR_LIMITS),
                            {"channel_id": cid, "workspace_id": workspace_id}).one_or_none()
    if found is None:
        raise ChannelNotFound(f"channel {cid} does not exist", field="channel_id")
    return cid


def _int(value: Any) -> int | None:
    return None if value is None else int(value)
