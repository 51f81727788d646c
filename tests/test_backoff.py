"""outbox/dispatch/backoff.py: the retry schedule and the outage backoff
(unit tests and properties)."""

from __future__ import annotations

import random

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from outbox.dispatch.backoff import (
    DEFAULT_BASE_SECONDS,
    DEFAULT_CAP_SECONDS,
    OUTAGE_BASE_SECONDS,
    OUTAGE_CAP_SECONDS,
    OutageBackoff,
    RetryPolicy,
    retry_delay,
)


class Draw:
    """An rng whose `uniform(a, b)` returns the point at fraction `u` of [a, b]:
    lets a property choose the jitter draw of every call."""

    def __init__(self, u: float) -> None:
        self.u = u

    def uniform(self, a: float, b: float) -> float:
        return a + self.u * (b - a)


fractions = st.floats(min_value=0.0, max_value=1.0)
attempts = st.integers(min_value=1, max_value=10_000)
# Monotone only while (1 + j) / (1 - j) <= 2, i.e. j <= 1/3 (steps double).
jitters = st.floats(min_value=0.0, max_value=0.33)
bases = st.floats(min_value=0.001, max_value=86_400.0)
caps = st.floats(min_value=0.001, max_value=10 * 86_400.0)


def test_default_schedule_without_jitter() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert [policy.delay(n) for n in range(0, 8)] == [0, 60, 120, 240, 480, 960, 960, 960]
    assert (DEFAULT_BASE_SECONDS, DEFAULT_CAP_SECONDS) == (60.0, 960.0)


def test_attempt_one_goes_out_at_once() -> None:
    """No failed attempt yet (and nonsense below that): no wait."""
    for n in (0, -1, -100):
        assert retry_delay(n) == 0.0
        assert RetryPolicy().delay(n, random.Random(1)) == 0.0


def test_jitter_stays_within_ten_percent() -> None:
    rng = random.Random(7)
    for n in range(1, 5):
        nominal = 60.0 * 2 ** (n - 1)
        for _ in range(200):
            assert nominal * 0.9 <= retry_delay(n, rng=rng) <= nominal * 1.1


def test_huge_attempt_counts_do_not_overflow() -> None:
    assert retry_delay(10**9, jitter=0.0) == DEFAULT_CAP_SECONDS
    assert retry_delay(10**9, base=1e300, cap=5.0) == 5.0


@pytest.mark.parametrize("seed", range(5))
def test_seeded_rng_is_reproducible(seed: int) -> None:
    a = [retry_delay(n, rng=random.Random(seed)) for n in range(1, 8)]
    b = [retry_delay(n, rng=random.Random(seed)) for n in range(1, 8)]
    assert a == b


@settings(max_examples=300)
@given(a=attempts, b=attempts, ua=fractions, ub=fractions, base=bases, cap=caps, jitter=jitters)
def test_monotone_in_attempts_whatever_the_jitter_draws(a, b, ua, ub, base, cap, jitter) -> None:
    assume(a != b)  # same attempt, two draws: jitter, not order
    lo, hi = sorted((a, b))
    d_lo = retry_delay(lo, base=base, cap=cap, jitter=jitter, rng=Draw(ua))  # type: ignore[arg-type]
    d_hi = retry_delay(hi, base=base, cap=cap, jitter=jitter, rng=Draw(ub))  # type: ignore[arg-type]
    assert d_lo <= d_hi * (1 + 1e-12)


@settings(max_examples=300)
@given(n=attempts, u=fractions, base=bases, cap=caps, jitter=jitters)
def test_capped_positive_and_near_nominal(n, u, base, cap, jitter) -> None:
    d = retry_delay(n, base=base, cap=cap, jitter=jitter, rng=Draw(u))  # type: ignore[arg-type]
    assert 0 < d <= cap
    nominal = base * 2.0 ** min(n - 1, 60)
    assert d >= min(cap, nominal * (1 - jitter)) * (1 - 1e-12)
    assert d <= nominal * (1 + jitter) * (1 + 1e-12)


@settings(max_examples=100)
@given(u=fractions)
def test_default_policy_first_retries(u: float) -> None:
    policy = RetryPolicy()
    delays = [policy.delay(n, Draw(u)) for n in range(1, 6)]  # type: ignore[arg-type]
    for n, d in enumerate(delays, start=1):
        assert 60 * 2 ** (n - 1) * 0.9 <= d <= min(960, 60 * 2 ** (n - 1) * 1.1)
    assert delays == sorted(delays)


# --- OutageBackoff: a reconnecting loop's waits ------------------------------------------


def test_an_outage_waits_half_a_second_then_doubles_up_to_thirty() -> None:
    b = OutageBackoff(jitter=0.0)
    assert [b.failed() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert b.failures == 9
    assert (OUTAGE_BASE_SECONDS, OUTAGE_CAP_SECONDS) == (0.5, 30.0)


def test_success_starts_over_and_says_how_long_the_outage_was() -> None:
    b = OutageBackoff(jitter=0.0)
    assert b.succeeded() == 0  # no outage: nothing to report
    b.failed()
    b.failed()
    b.failed()
    assert b.succeeded() == 3 and b.failures == 0
    assert b.succeeded() == 0
    assert b.failed() == 0.5  # the next outage starts from the bottom


def test_outage_waits_are_jittered_within_bounds_and_never_past_the_cap() -> None:
    b = OutageBackoff(rng=random.Random(3))
    for n in range(1, 40):
        nominal = min(OUTAGE_CAP_SECONDS, 0.5 * 2 ** (n - 1))
        d = b.failed()
        assert d <= OUTAGE_CAP_SECONDS
        assert min(OUTAGE_CAP_SECONDS, 0.5 * 2 ** (n - 1) * 0.8) <= d <= nominal * 1.2


def test_outage_backoffs_with_their_own_rngs_do_not_move_in_step() -> None:
    """Workers cut off by the same outage must not all come back at once."""
    first = [OutageBackoff(rng=random.Random(seed)).failed() for seed in range(20)]
    assert len(set(first)) == 20


@settings(max_examples=200)
@given(failures=st.integers(min_value=1, max_value=200), u=fractions)
def test_outage_waits_grow_with_failures(failures: int, u: float) -> None:
    b = OutageBackoff(rng=Draw(u))  # type: ignore[arg-type]
    waits = [b.failed() for _ in range(failures)]
    assert waits == sorted(waits) and waits[0] > 0 and waits[-1] <= OUTAGE_CAP_SECONDS
