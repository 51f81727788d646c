"""outbox/dispatch/outcomes.py: what a send result does to the row, exhaustively."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outbox.dispatch.backoff import RetryPolicy
from outbox.dispatch.outcomes import (
    MAX_ERROR_LENGTH,
    ChannelAction,
    Decision,
    Kind,
    RateLimitEvent,
    decide,
    release,
)
from outbox.providers.base import ChannelProblem, Outcome, SendResult

POLICY = RetryPolicy()
LEGAL_STATUSES = {"queued", "sent", "failed"}


def results() -> st.SearchStrategy[SendResult]:
    return st.builds(
        SendResult,
        outcome=st.sampled_from(list(Outcome)),
        wa_message_id=st.none() | st.text(min_size=1, max_size=40),
        retry_after=st.none() | st.floats(min_value=0, max_value=86_400),
        channel_problem=st.none() | st.sampled_from(list(ChannelProblem)),
        error=st.none() | st.text(max_size=2000),
        status_code=st.none() | st.integers(100, 599),
        ambiguous=st.booleans(),
    )


@pytest.mark.slow
@settings(max_examples=500)
@given(result=results(), attempts=st.integers(1, 200), max_attempts=st.integers(1, 100),
       seed=st.integers(0, 2**32))
def test_decide_is_total_and_legal(result: SendResult, attempts: int, max_attempts: int,
                                   seed: int) -> None:
    d = decide(attempts=attempts, max_attempts=max_attempts, result=result, policy=POLICY,
               rng=random.Random(seed))
    assert isinstance(d, Decision)
    assert d.outbox_status in LEGAL_STATUSES
    assert d.error is None or len(d.error) <= MAX_ERROR_LENGTH
    assert d.delay_seconds >= 0
    # The kind agrees with the status.
    assert {"sent": {Kind.SENT}, "failed": {Kind.FAILED},
            "queued": {Kind.RETRIED, Kind.RELEASED}}[d.outbox_status] >= {d.kind}
    # A refund never takes attempts below zero (attempts counts this one).
    assert attempts - (1 if d.refund_attempt else 0) >= 0

    match result.outcome:
        case Outcome.SENT:
            assert d.outbox_status == "sent" and d.wa_message_id == result.wa_message_id
            assert not d.refund_attempt and d.channel_action is ChannelAction.NONE
        case Outcome.PERMANENT:
            assert d.outbox_status == "failed" and d.error
            assert not d.refund_attempt
        case Outcome.RATE_LIMITED:
            # Never spends an attempt, whatever the count: not the message's fault.
            assert d.outbox_status == "queued" and d.refund_attempt
            assert d.channel_action is ChannelAction.RATE_LIMIT
            assert d.retry_after == result.retry_after and d.delay_seconds == 0
        case Outcome.CHANNEL_PROBLEM:
            assert d.outbox_status == "queued" and d.refund_attempt and d.delay_seconds == 0
            # Paused, never disabled: a human (or the session coming back) resumes it.
            assert d.channel_action is ChannelAction.PAUSE
            assert d.pause_cause == (result.channel_problem.value
                                     if result.channel_problem else None)
        case Outcome.TRANSIENT:
            assert not d.refund_attempt and d.channel_action is ChannelAction.NONE
            assert d.ambiguous == result.ambiguous
            if attempts >= max_attempts:
                assert d.outbox_status == "failed" and d.error
                assert f"gave up after {attempts} attempts" in d.error
            else:
                assert d.outbox_status == "queued" and d.kind is Kind.RETRIED
                nominal = 60.0 * 2 ** min(attempts - 1, 60)
                assert min(960.0, nominal * 0.9) <= d.delay_seconds <= min(960.0, nominal * 1.1)


@pytest.mark.parametrize(("result", "attempts", "status", "kind", "action"), [
    (SendResult(Outcome.SENT, wa_message_id="w1"), 1, "sent", Kind.SENT, ChannelAction.NONE),
    (SendResult(Outcome.PERMANENT, status_code=400, error="HTTP 400"), 1, "failed",
     Kind.FAILED, ChannelAction.NONE),
    (SendResult(Outcome.TRANSIENT, status_code=503, error="HTTP 503"), 1, "queued",
     Kind.RETRIED, ChannelAction.NONE),
    (SendResult(Outcome.TRANSIENT, status_code=503, error="HTTP 503"), 5, "failed",
     Kind.FAILED, ChannelAction.NONE),
    (SendResult(Outcome.TRANSIENT, status_code=503, error="HTTP 503"), 9, "failed",
     Kind.FAILED, ChannelAction.NONE),
    (SendResult(Outcome.RATE_LIMITED, status_code=429, retry_after=3.0), 5, "queued",
     Kind.RELEASED, ChannelAction.RATE_LIMIT),
    (SendResult(Outcome.CHANNEL_PROBLEM, channel_problem=ChannelProblem.UNAUTHORIZED), 5,
     "queued", Kind.RELEASED, ChannelAction.PAUSE),
    (SendResult(Outcome.CHANNEL_PROBLEM, channel_problem=ChannelProblem.TRIAL_LIMIT), 1,
     "queued", Kind.RELEASED, ChannelAction.PAUSE),
    (SendResult(Outcome.CHANNEL_PROBLEM, channel_problem=ChannelProblem.NOT_FOUND), 1,
     "queued", Kind.RELEASED, ChannelAction.PAUSE),
])
def test_decision_table(result, attempts, status, kind, action) -> None:
    d = decide(attempts=attempts, max_attempts=5, result=result, policy=POLICY)
    assert (d.outbox_status, d.kind, d.channel_action) == (status, kind, action)


def test_timeout_at_last_attempt_is_failed_and_flagged_ambiguous() -> None:
    r = SendResult(Outcome.TRANSIENT, error="timeout", ambiguous=True)
    d = decide(attempts=5, max_attempts=5, result=r, policy=POLICY)
    assert d.outbox_status == "failed" and d.ambiguous


def test_long_errors_are_clipped() -> None:
    r = SendResult(Outcome.PERMANENT, error="x" * 10_000)
    d = decide(attempts=1, max_attempts=5, result=r, policy=POLICY)
    assert d.error is not None and len(d.error) == MAX_ERROR_LENGTH and d.error.endswith("…")


def test_release_gives_the_row_back_untouched() -> None:
    d = release()
    assert (d.outbox_status, d.kind, d.refund_attempt, d.delay_seconds) == (
        "queued", Kind.RELEASED, True, 0.0)
    assert d.channel_action is ChannelAction.NONE


def test_rate_limit_events_fold_to_the_latest_request_and_longest_retry_after() -> None:
    a = RateLimitEvent(retry_after=None, requested_at=100.0)
    b = RateLimitEvent(retry_after=5.0, requested_at=90.0)
    c = RateLimitEvent(retry_after=2.0, requested_at=None)
    assert a.merge(None) == a
    assert a.merge(b) == b.merge(a) == RateLimitEvent(5.0, 100.0)
    assert a.merge(b).merge(c) == RateLimitEvent(5.0, 100.0)
    none = RateLimitEvent(None, None)
    assert none.merge(none) == none
