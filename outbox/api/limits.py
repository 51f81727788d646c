"""Abuse limits of the HTTP API: requests per API key (or signed-in user),
queued rows per workspace, sign-in attempts per account and per address.

All answer 429 with Retry-After. All are per process: behind N replicas of
`outbox serve` a key may make N times the rate, and a workspace may overshoot
its cap by what the replicas admit in one refresh interval; they bound abuse,
they are not quotas to bill by.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from outbox.db.admission_queries import WORKSPACE_QUEUED
from outbox.errors import QueueFull, RateLimited

Clock = Callable[[], float]
# Keys remembered at most; the least recently seen are forgotten (a full bucket).
MAX_TRACKED_KEYS = 10_000
# How long a workspace's queued count is trusted before it is counted again.
QUEUE_COUNT_TTL_SECONDS = 5.0
# Sign-in attempts: a few in a row for one account, then one a minute (a
# password guesser gets ~1,400 a day per account); an address may try more
# accounts (an office behind one NAT), then one every five seconds.
LOGIN_ACCOUNT_BURST = 5
LOGIN_ACCOUNT_PER_SECOND = 1 / 60
LOGIN_ADDRESS_BURST = 20
LOGIN_ADDRESS_PER_SECOND = 1 / 5


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class KeyRateLimiter:
    """A token bucket per key: `per_second` refill, `burst` capacity.
    `per_second <= 0` turns it off."""

    def __init__(self, per_second: float, burst: int, *, clock: Clock = time.monotonic) -> None:
        self.per_second = per_second
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> float:
        """Spend one token of `key`'s: 0.0 if there was one, else the seconds
        until there is."""
        if self.per_second <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.pop(key, None) or _Bucket(float(self.burst), now)
            refill = (now - bucket.updated) * self.per_second
            bucket.tokens = min(self.burst, bucket.tokens + refill)
            bucket.updated = now
            self._buckets[key] = bucket
            if len(self._buckets) > MAX_TRACKED_KEYS:
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.per_second

    def check(self, key: Hashable, *, what: str = "API key") -> None:
        """`RateLimited` (429, Retry-After) when `key` is out of tokens;
        `what` names the key in the message."""
        wait = self.take(key)
        if wait > 0:
            raise RateLimited(f"too many requests for this {what}: more than "
                              f"{self.per_second:g} a second; retry in {math.ceil(wait)} s",
                              retry_after=wait)


class LoginLimits:
    """Sign-in attempts, counted before the password is checked (so a locked
    account costs no Argon2 work), the same for unknown and real accounts."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self.per_account = KeyRateLimiter(LOGIN_ACCOUNT_PER_SECOND, LOGIN_ACCOUNT_BURST,
                                          clock=clock)
        self.per_address = KeyRateLimiter(LOGIN_ADDRESS_PER_SECOND, LOGIN_ADDRESS_BURST,
                                          clock=clock)

    def check(self, address: str, account: Hashable) -> None:
        for limiter, key, what in ((self.per_address, address, "address"),
                                   (self.per_account, account, "account")):
            wait = limiter.take(key)
            if wait > 0:
                raise RateLimited(f"too many sign-in attempts from this {what}; retry in "
                                  f"{math.ceil(wait)} s", retry_after=wait)


class WorkspaceQueueCap:
    """At most `cap` queued messages per workspace (`cap <= 0`: no cap).

    Counting a workspace's queue costs an index scan, so the count is kept
    for QUEUE_COUNT_TTL_SECONDS and what this process admitted since is
    added to it."""

    def __init__(self, cap: int, *, clock: Clock = time.monotonic) -> None:
        self.cap = cap
        self._clock = clock
        self._counts: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def admit(self, session: Session, workspace_id: str, adding: int) -> None:
        """`QueueFull` (429) when `adding` more would pass the cap; else count them in."""
        if self.cap <= 0:
            return
        now = self._clock()
        with self._lock:
            cached = self._counts.get(workspace_id)
        if cached is None or now - cached[1] > QUEUE_COUNT_TTL_SECONDS:
            queued = int(session.execute(text(WORKSPACE_QUEUED),
                                         {"workspace_id": workspace_id}).scalar_one())
            cached = (queued, now)
        queued, counted_at = cached
        if queued + adding > self.cap:
            with self._lock:
                self._counts[workspace_id] = cached
            raise QueueFull(f"this workspace has {queued:,} messages queued, the most it may "
                            f"hold is {self.cap:,} (OUTBOX_MAX_QUEUED_PER_WORKSPACE)",
                            retry_after=QUEUE_COUNT_TTL_SECONDS)
        with self._lock:
            self._counts[workspace_id] = (queued + adding, counted_at)
