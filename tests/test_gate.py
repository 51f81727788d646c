"""outbox/dispatch/gate.py: local pauses and the circuit breaker, on their own.

Pure: every test passes the time in, so expiry and interleavings are exact.
"""

from __future__ import annotations

import time
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outbox.dispatch.gate import ChannelGate, local_pause_seconds
from outbox.dispatch.outcomes import ChannelAction, Decision, Kind, release
from outbox.providers.base import Outcome

A = uuid.UUID(int=1)
B = uuid.UUID(int=2)
LEASE = 60.0


def gate(failures: int = 3, pause: float = 30.0, max_pause: float = LEASE) -> ChannelGate:
    return ChannelGate(breaker_failures=failures, breaker_pause_seconds=pause,
                       max_pause_seconds=max_pause)


# --- local pauses ---------------------------------------------------------------------


def test_a_fresh_gate_holds_nothing_back() -> None:
    g = gate()
    assert not g.paused(A, 0.0) and not g.paused(B, 1e9)


def test_a_pause_holds_until_its_end_and_not_at_it() -> None:
    g = gate()
    g.pause(A, 10.0, now=100.0)
    assert g.paused(A, 100.0)
    assert g.paused(A, 109.999)
    assert not g.paused(A, 110.0)  # until <= now: over
    assert not g.paused(A, 105.0)  # and forgotten once seen over


def test_a_pause_is_capped_at_the_lease() -> None:
    g = gate(max_pause=LEASE)
    g.pause(A, 86400.0, now=0.0)
    assert g.paused(A, LEASE - 0.001) and not g.paused(A, LEASE)


def test_a_pause_never_shortens_one_in_place() -> None:
    g = gate()
    g.pause(A, 20.0, now=0.0)
    g.pause(A, 5.0, now=1.0)
    assert g.paused(A, 19.9) and not g.paused(A, 20.0)
    g.pause(A, 30.0, now=2.0)  # a longer one extends it
    assert g.paused(A, 31.9) and not g.paused(A, 32.0)


def test_after_a_pause_ran_out_a_shorter_one_applies() -> None:
    g = gate()
    g.pause(A, 20.0, now=0.0)
    g.pause(A, 5.0, now=100.0)  # the old end (20) is in the past, never consulted
    assert g.paused(A, 104.9) and not g.paused(A, 105.0)


def test_a_zero_pause_holds_nothing() -> None:
    g = gate()
    g.pause(A, 0.0, now=5.0)
    assert not g.paused(A, 5.0)


def test_channels_are_paused_independently() -> None:
    g = gate()
    g.pause(A, 10.0, now=0.0)
    assert g.paused(A, 5.0) and not g.paused(B, 5.0)
    g.pause(B, 20.0, now=5.0)
    assert not g.paused(A, 10.0) and g.paused(B, 10.0) and g.paused(B, 24.9)


# --- the circuit breaker -----------------------------------------------------------------


def test_the_breaker_trips_at_the_threshold_and_not_before() -> None:
    g = gate(failures=3, pause=30.0)
    assert g.observe(A, Outcome.TRANSIENT, 0.0) is False and g.streak(A) == 1
    assert g.observe(A, Outcome.TRANSIENT, 1.0) is False and g.streak(A) == 2
    assert not g.paused(A, 1.0)
    assert g.observe(A, Outcome.TRANSIENT, 2.0) is True
    assert g.paused(A, 2.0) and g.paused(A, 31.9) and not g.paused(A, 32.0)
    assert g.streak(A) == 0  # starts over after a trip


def test_after_a_trip_it_takes_the_full_threshold_again() -> None:
    g = gate(failures=3)
    trips = [g.observe(A, Outcome.TRANSIENT, float(t)) for t in range(9)]
    assert trips == [False, False, True] * 3


@pytest.mark.parametrize("outcome", [Outcome.SENT, Outcome.PERMANENT, Outcome.CHANNEL_PROBLEM])
def test_any_answer_but_a_failure_or_a_429_ends_the_streak(outcome: Outcome) -> None:
    g = gate(failures=3)
    g.observe(A, Outcome.TRANSIENT, 0.0)
    g.observe(A, Outcome.TRANSIENT, 1.0)
    assert g.observe(A, outcome, 2.0) is False and g.streak(A) == 0
    assert g.observe(A, Outcome.TRANSIENT, 3.0) is False
    assert g.observe(A, Outcome.TRANSIENT, 4.0) is False
    assert g.observe(A, Outcome.TRANSIENT, 5.0) is True


def test_a_429_neither_counts_nor_ends_the_streak() -> None:
    g = gate(failures=3)
    g.observe(A, Outcome.TRANSIENT, 0.0)
    g.observe(A, Outcome.TRANSIENT, 1.0)
    for t in range(10):
        assert g.observe(A, Outcome.RATE_LIMITED, 2.0 + t) is False
    assert g.streak(A) == 2
    assert g.observe(A, Outcome.TRANSIENT, 20.0) is True


def test_a_429_alone_never_trips_the_breaker() -> None:
    g = gate(failures=1)
    assert not any(g.observe(A, Outcome.RATE_LIMITED, float(t)) for t in range(50))
    assert not g.paused(A, 50.0)


def test_zero_failures_turns_the_breaker_off() -> None:
    g = gate(failures=0)
    assert not any(g.observe(A, Outcome.TRANSIENT, float(t)) for t in range(1000))
    assert g.streak(A) == 0 and not g.paused(A, 1000.0)


def test_a_threshold_of_one_trips_on_every_failure() -> None:
    g = gate(failures=1, pause=5.0)
    assert g.observe(A, Outcome.TRANSIENT, 0.0) is True
    assert g.observe(A, Outcome.TRANSIENT, 1.0) is True  # the pause runs 1 + 5 now
    assert g.paused(A, 5.9) and not g.paused(A, 6.0)


def test_streaks_are_per_channel_whatever_the_interleaving() -> None:
    g = gate(failures=3)
    events = [(A, Outcome.TRANSIENT), (B, Outcome.TRANSIENT), (A, Outcome.TRANSIENT),
              (B, Outcome.SENT), (B, Outcome.TRANSIENT), (A, Outcome.TRANSIENT)]
    trips = [g.observe(ch, o, float(t)) for t, (ch, o) in enumerate(events)]
    assert trips == [False, False, False, False, False, True]
    assert g.paused(A, 5.0) and not g.paused(B, 5.0) and g.streak(B) == 1


def test_a_trip_pause_is_capped_and_never_shortens_a_longer_pause() -> None:
    capped = gate(failures=1, pause=600.0, max_pause=LEASE)
    capped.observe(A, Outcome.TRANSIENT, 0.0)
    assert capped.paused(A, LEASE - 0.1) and not capped.paused(A, LEASE)

    g = gate(failures=1, pause=5.0)
    g.pause(A, 40.0, now=0.0)  # a 429's Retry-After
    assert g.observe(A, Outcome.TRANSIENT, 1.0) is True
    assert g.paused(A, 39.9) and not g.paused(A, 40.0)


def test_the_gate_never_reads_a_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_clock() -> float:
        raise AssertionError("the gate read the clock")

    for name in ("monotonic", "time", "perf_counter"):
        monkeypatch.setattr(time, name, no_clock)
    g = gate(failures=2)
    g.pause(A, 3.0, now=0.0)
    g.observe(B, Outcome.TRANSIENT, 1.0)
    g.observe(B, Outcome.TRANSIENT, 2.0)
    assert g.paused(A, 1.0) and g.paused(B, 2.0)


# --- how long a decision holds its channel back ---------------------------------------------


def test_a_plain_decision_holds_nothing_back() -> None:
    for d in (Decision("sent", Kind.SENT), Decision("failed", Kind.FAILED),
              Decision("queued", Kind.RETRIED, delay_seconds=60.0), release()):
        assert local_pause_seconds(d, rate_limit_pause_seconds=30, lease_seconds=LEASE) is None


@pytest.mark.parametrize(("retry_after", "expected"), [(None, 30.0), (0.0, 0.0), (7.5, 7.5),
                                                        (86400.0, 86400.0)])
def test_a_429_holds_back_for_its_retry_after_or_the_configured_pause(
        retry_after: float | None, expected: float) -> None:
    d = Decision("queued", Kind.RELEASED, refund_attempt=True,
                 channel_action=ChannelAction.RATE_LIMIT, retry_after=retry_after)
    assert local_pause_seconds(d, rate_limit_pause_seconds=30.0,
                               lease_seconds=LEASE) == expected


def test_a_channel_problem_holds_back_for_the_rest_of_the_lease() -> None:
    d = Decision("queued", Kind.RELEASED, refund_attempt=True,
                 channel_action=ChannelAction.PAUSE, pause_cause="unauthorized")
    assert local_pause_seconds(d, rate_limit_pause_seconds=30.0, lease_seconds=45.0) == 45.0


# --- any interleaving, against a model written the obvious way ------------------------------

channels = st.sampled_from([A, B])
outcomes = st.sampled_from(list(Outcome))
steps = st.lists(st.tuples(
    st.sampled_from(["observe", "pause", "check"]), channels, outcomes,
    st.floats(min_value=0.0, max_value=100.0),  # pause length
    st.floats(min_value=0.0, max_value=20.0),  # time passing before the step
), max_size=60)


@pytest.mark.slow
@settings(max_examples=400)
@given(steps=steps, failures=st.integers(min_value=0, max_value=4),
       trip_pause=st.floats(min_value=0.0, max_value=100.0))
def test_any_interleaving_matches_the_model(steps, failures, trip_pause) -> None:  # type: ignore[no-untyped-def]
    g = gate(failures=failures, pause=trip_pause, max_pause=LEASE)
    ends: dict[uuid.UUID, float] = {}  # model: latest end of any pause
    counts: dict[uuid.UUID, int] = {A: 0, B: 0}
    now = 0.0
    for action, ch, outcome, seconds, elapsed in steps:
        now += elapsed
        if action == "pause":
            g.pause(ch, seconds, now)
            ends[ch] = max(ends.get(ch, 0.0), now + min(seconds, LEASE))
        elif action == "observe":
            expect_trip = False
            if outcome is Outcome.TRANSIENT and failures:
                counts[ch] += 1
                if counts[ch] == failures:
                    counts[ch] = 0
                    expect_trip = True
                    ends[ch] = max(ends.get(ch, 0.0), now + min(trip_pause, LEASE))
            elif outcome not in (Outcome.TRANSIENT, Outcome.RATE_LIMITED):
                counts[ch] = 0
            assert g.observe(ch, outcome, now) is expect_trip
        assert g.paused(ch, now) is (ends.get(ch, 0.0) > now)
        assert g.streak(ch) == counts[ch]
