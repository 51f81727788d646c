"""Which channels a dispatcher holds back right now: pure, no I/O, no clock.

Rows already claimed on a channel must not go out once the channel is in
trouble, and the database only learns of the trouble at the next flush.
So the dispatcher keeps a local view, per channel:

* a local pause: a 429 or a channel problem on one row holds back its
  siblings already claimed. Claims respect the database's pause (written at
  the next flush); this only covers rows already claimed, so it never needs
  to outlive a lease (`max_pause_seconds`). A pause never shortens one in
  place.
* the circuit breaker: `breaker_failures` consecutive transient failures
  trip it: the channel pauses locally for `breaker_pause_seconds`, and
  `observe` says so, for the database pause. Any other answer, except a
  429, shows the channel reachable and ends the streak. 0 failures: off.

Time is passed in (monotonic seconds): tests replay any interleaving.
Exhaustively tested in tests/test_gate.py.
"""

from __future__ import annotations

import uuid

from outbox.dispatch.outcomes import ChannelAction, Decision
from outbox.providers.base import Outcome


class ChannelGate:
    def __init__(self, *, breaker_failures: int, breaker_pause_seconds: float,
                 max_pause_seconds: float) -> None:
        self.breaker_failures = breaker_failures
        self.breaker_pause_seconds = breaker_pause_seconds
        self.max_pause_seconds = max_pause_seconds
        self._paused_until: dict[uuid.UUID, float] = {}
        self._streak: dict[uuid.UUID, int] = {}

    def paused(self, channel_id: uuid.UUID, now: float) -> bool:
        """Whether the channel's claimed rows must wait (an expired pause is forgotten)."""
        until = self._paused_until.get(channel_id)
        if until is None:
            return False
        if until <= now:
            del self._paused_until[channel_id]
            return False
        return True

    def pause(self, channel_id: uuid.UUID, seconds: float, now: float) -> None:
        until = now + min(seconds, self.max_pause_seconds)
        self._paused_until[channel_id] = max(until, self._paused_until.get(channel_id, until))

    def observe(self, channel_id: uuid.UUID, outcome: Outcome, now: float) -> bool:
        """Count a send's outcome toward the breaker; True when this one trips it
        (the channel is then paused locally and its streak starts over)."""
        if outcome is Outcome.RATE_LIMITED:
            return False  # says nothing about reachability either way
        if outcome is not Outcome.TRANSIENT:
            self._streak.pop(channel_id, None)
            return False
        if not self.breaker_failures:
            return False
        streak = self._streak.get(channel_id, 0) + 1
        if streak < self.breaker_failures:
            self._streak[channel_id] = streak
            return False
        self._streak.pop(channel_id, None)
        self.pause(channel_id, self.breaker_pause_seconds, now)
        return True

    def streak(self, channel_id: uuid.UUID) -> int:
        """Consecutive transient failures counted on the channel so far."""
        return self._streak.get(channel_id, 0)


def local_pause_seconds(decision: Decision, *, rate_limit_pause_seconds: float,
                        lease_seconds: float) -> float | None:
    """How long a decision holds back its channel's other claimed rows (None:
    not at all). A 429 for its Retry-After, or the configured pause; a
    channel problem for the rest of the lease (a human has to act)."""
    match decision.channel_action:
        case ChannelAction.NONE:
            return None
        case ChannelAction.RATE_LIMIT:
            if decision.retry_after is not None:
                return decision.retry_after
            return rate_limit_pause_seconds
        case ChannelAction.PAUSE:
            return lease_seconds
    raise AssertionError(f"unhandled action {decision.channel_action!r}")  # pragma: no cover
