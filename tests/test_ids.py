"""Message ids (outbox/ids.py): RFC 9562 version 7 layout, unique, time-ordered."""

from __future__ import annotations

import time
import uuid

import pytest

from outbox.ids import uuid7s


def _millis(u: uuid.UUID) -> int:
    return u.int >> 80


def test_layout_is_version_7_rfc_variant() -> None:
    for u in uuid7s(1000):
        assert u.version == 7
        assert u.variant == uuid.RFC_4122


def test_timestamp_is_the_clock_in_milliseconds() -> None:
    before = time.time_ns() // 1_000_000
    [u] = uuid7s(1)
    after = time.time_ns() // 1_000_000
    assert before <= _millis(u) <= after


@pytest.mark.slow
def test_unique_and_random_within_one_millisecond() -> None:
    ids = uuid7s(200_000)
    assert len(set(ids)) == len(ids)
    # One batch shares its millisecond; the rest is random, not a counter.
    assert len({_millis(u) for u in ids}) == 1
    assert len({u.int & 0xFFF for u in ids}) > 4000


def test_later_batches_sort_after_earlier_ones() -> None:
    first = uuid7s(100)
    time.sleep(0.002)
    second = uuid7s(100)
    assert max(first) < min(second)
    # Also as PostgreSQL compares uuids: bytewise, same as the int order.
    assert max(u.bytes for u in first) < min(u.bytes for u in second)


def test_zero_ids() -> None:
    assert uuid7s(0) == []
