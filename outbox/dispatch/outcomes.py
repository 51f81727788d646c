"""What a send result means for the row, the message and the channel.

Pure: `decide` maps one claimed row and one provider result to a
`Decision`; the dispatcher applies decisions in batches (db/queries.py
COMPLETE). Exhaustively tested in tests/test_outcomes.py.

A 429, step by step: providers/classify.py reads it (RATE_LIMITED, with
Retry-After); `decide` here releases the row, attempt refunded, and asks
for a channel pause; gate.py holds back the worker's other claimed rows on
the channel; completer.py writes one pause per channel per batch;
db/queries.py PAUSE_RATE_LIMITED sets its length and counts the strike.
The whole story: docs/semantics.md, "The 429 pause".
"""

from __future__ import annotations

import enum
import random
import re
from dataclasses import dataclass

from outbox.dispatch.backoff import RetryPolicy
from outbox.providers.base import Outcome, SendResult
from outbox.states import OutboxStatus, PauseCause

MAX_ERROR_LENGTH = 500


class ChannelAction(enum.StrEnum):
    NONE = "none"
    RATE_LIMIT = "rate_limit"  # pause the channel for a while
    PAUSE = "pause"  # needs a human (401 logged out, 402 trial over, 404 off the media endpoints)


class Kind(enum.StrEnum):
    """For counters and summaries."""

    SENT = "sent"
    RETRIED = "retried"
    FAILED = "failed"
    RELEASED = "released"  # back to queued without spending an attempt


@dataclass(frozen=True, slots=True)
class Decision:
    outbox_status: OutboxStatus  # queued | sent | failed
    kind: Kind
    refund_attempt: bool = False
    delay_seconds: float = 0.0
    error: str | None = None
    wa_message_id: str | None = None
    channel_action: ChannelAction = ChannelAction.NONE
    retry_after: float | None = None
    ambiguous: bool = False  # the provider may have accepted it: a retry may duplicate
    # Unix time the request left (set by the dispatcher on rate-limit
    # decisions): a 429 to a request sent before the channel's pause began
    # belongs to that rate-limit event and must not escalate it.
    requested_at: float | None = None
    # For PAUSE: why, as a channel pause cause (outbox.states.PauseCause).
    pause_cause: PauseCause | None = None


def decide(
    *,
    attempts: int,
    max_attempts: int,
    result: SendResult,
    policy: RetryPolicy,
    rng: random.Random | None = None,
) -> Decision:
    """`attempts` counts the attempt that produced `result`."""
    error = _clip(result.error)
    match result.outcome:
        case Outcome.SENT:
            return Decision(OutboxStatus.SENT, Kind.SENT, wa_message_id=result.wa_message_id)
        case Outcome.PERMANENT:
            return Decision(OutboxStatus.FAILED, Kind.FAILED,
                            error=error or "rejected by the provider")
        case Outcome.RATE_LIMITED:
            return Decision(OutboxStatus.QUEUED, Kind.RELEASED, refund_attempt=True, error=error,
                            channel_action=ChannelAction.RATE_LIMIT,
                            retry_after=result.retry_after)
        case Outcome.CHANNEL_PROBLEM:
            problem = result.channel_problem
            return Decision(OutboxStatus.QUEUED, Kind.RELEASED, refund_attempt=True, error=error,
                            channel_action=ChannelAction.PAUSE,
                            pause_cause=PauseCause(problem) if problem is not None else None)
        case Outcome.TRANSIENT:
            if attempts >= max_attempts:
                return Decision(OutboxStatus.FAILED, Kind.FAILED, ambiguous=result.ambiguous,
                                error=_clip(f"gave up after {attempts} attempts: {error}"))
            return Decision(OutboxStatus.QUEUED, Kind.RETRIED,
                            delay_seconds=policy.delay(attempts, rng),
                            error=error, ambiguous=result.ambiguous)
    raise AssertionError(f"unhandled outcome {result.outcome!r}")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class RateLimitEvent:
    """A channel's 429 answers in one completed batch, folded into one.

    `retry_after`: the longest Retry-After given (None when none was).
    `requested_at`: when the latest of those requests left; the database
    counts a new strike only if that is after the channel's current
    rate-limit pause began (db/queries.py PAUSE_RATE_LIMITED).
    """

    retry_after: float | None
    requested_at: float | None

    @classmethod
    def of(cls, decision: Decision) -> RateLimitEvent:
        return cls(decision.retry_after, decision.requested_at)

    def merge(self, other: RateLimitEvent | None) -> RateLimitEvent:
        if other is None:
            return self
        return RateLimitEvent(_max(self.retry_after, other.retry_after),
                              _max(self.requested_at, other.requested_at))


def _max(a: float | None, b: float | None) -> float | None:
    return b if a is None else a if b is None else max(a, b)


def is_daily_trial_limit(decision: Decision) -> bool:
    """Whether a channel problem is a trial's daily limit (a 402 whose
    message speaks of a day and not of a month): that pause ends with the
    day; any other 402 (the monthly chats or requests) waits for a human.
    Whapi's exact wording is not documented, hence words, not a phrase."""
    if decision.pause_cause is not PauseCause.TRIAL_LIMIT or not decision.error:
        return False
    words = set(re.findall(r"[a-z]+", decision.error.lower()))
    return bool(words & {"day", "daily", "today", "days"}) and not words & {
        "month", "monthly"}


def release() -> Decision:
    """Give a claimed row back untouched (shutdown, channel paused meanwhile)."""
    return Decision(OutboxStatus.QUEUED, Kind.RELEASED, refund_attempt=True)


def _clip(error: str | None) -> str | None:
    if error is None:
        return None
    return error if len(error) <= MAX_ERROR_LENGTH else error[: MAX_ERROR_LENGTH - 1] + "…"
