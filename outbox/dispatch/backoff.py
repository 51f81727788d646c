"""Retry timing: pure functions, property-tested.

Attempt 1 goes out at once; after failed attempt n the next one waits
`base * 2**(n-1)` (1, 2, 4, 8 minutes by default), capped (16 minutes),
with ±10% jitter so a burst of failures doesn't retry as a burst. Jitter
stays inside the gap between consecutive steps, so delays never shrink as
attempts grow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_BASE_SECONDS = 60.0
DEFAULT_CAP_SECONDS = 960.0
JITTER = 0.1  # ±10%: consecutive steps double, so jittered ranges never overlap


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
