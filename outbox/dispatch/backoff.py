"""When to try again: pure timing, property-tested.

Two schedules, one formula (`retry_delay`):

* A message's next attempt (`RetryPolicy`): attempt 1 goes out at once;
  after failed attempt n the next one waits `base * 2**(n-1)` (1, 2, 4, 8
  minutes by default), capped (16 minutes), with ±10% jitter so a burst of
  failures doesn't retry as a burst. Jitter stays inside the gap between
  consecutive steps, so delays never shrink as attempts grow.
* A lost database (`OutageBackoff`): every loop of the worker that retries
  a connection (the dispatcher's claims and completions, the daemon's
  LISTEN) counts its consecutive failures here and waits 0.5, 1, 2 ... up
  to 30 seconds, jittered so that workers cut off together don't all come
  back in the same instant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DEFAULT_BASE_SECONDS = 60.0
DEFAULT_CAP_SECONDS = 960.0
JITTER = 0.1  # ±10%: consecutive steps double, so jittered ranges never overlap

OUTAGE_BASE_SECONDS = 0.5  # the first retry after a lost connection
OUTAGE_CAP_SECONDS = 30.0  # a long outage is probed this often
OUTAGE_JITTER = 0.2


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float = DEFAULT_BASE_SECONDS
    cap_seconds: float = DEFAULT_CAP_SECONDS
    jitter: float = JITTER

    def delay(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after `failed_attempts` attempts have failed (>= 1)."""
        return retry_delay(failed_attempts, base=self.base_seconds, cap=self.cap_seconds,
                           jitter=self.jitter, rng=rng)


def retry_delay(
    failed_attempts: int,
    *,
    base: float = DEFAULT_BASE_SECONDS,
    cap: float = DEFAULT_CAP_SECONDS,
    jitter: float = JITTER,
    rng: random.Random | None = None,
) -> float:
    if failed_attempts < 1:
        return 0.0
    # Clamp the exponent: 2**1000 overflows float, and the cap wins long before.
    raw = base * 2.0 ** min(failed_attempts - 1, 60)
    r = (rng or random).uniform(1.0 - jitter, 1.0 + jitter) if jitter else 1.0
    return min(cap, raw * r)


@dataclass(slots=True)
class OutageBackoff:
    """The consecutive failures of one reconnecting loop, and how long to
    wait after each. The caller sleeps; this only counts and computes, so an
    outage of any length can be replayed in a test."""

    base_seconds: float = OUTAGE_BASE_SECONDS
    cap_seconds: float = OUTAGE_CAP_SECONDS
    jitter: float = OUTAGE_JITTER
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def failed(self) -> float:
        """Count one more failure; the seconds to wait before the next try."""
        self.failures += 1
        return retry_delay(self.failures, base=self.base_seconds, cap=self.cap_seconds,
                           jitter=self.jitter, rng=self.rng)

    def succeeded(self) -> int:
        """The loop got through: start over. Returns how many failures the
        outage lasted (0: there was none), for a "back again" log line."""
        failures, self.failures = self.failures, 0
        return failures
