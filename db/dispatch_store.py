"""The dispatcher's statements, on psycopg connections of its own.

Everything the dispatcher reads and writes goes through `DispatchStore`:
which channels have queued rows (at start-up), their credentials, CLAIM,
COMPLETE with the channel pauses a batch brings (circuit breaker, rate
limit, channel problem), the lease heartbeat, and the count of due rows a
progress bar starts from. The SQL is db/queries.py's, converted
once for psycopg; the connections are db/direct.py's (it says why not
SQLAlchemy's). A failure arrives as `DatabaseUnavailable` (wait and try
again) or `StatementRefused` (this statement will never go through), and as
nothing else.

Three connections, one per role, so none waits for another's statement:
claims (and the start-up read) on one; completions and the heartbeat on the
second, taking turns (a heartbeat waits for at most one completion); the
marks of sends about to start on the third (a request waits for its mark).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from outbox.db import queries
from outbox.db.conninfo import DatabaseTarget
from outbox.db.direct import DirectConnection
from outbox.db.driver_sql import driver_sql
from outbox.db.states import OutboxStatus, PauseCause

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

# The statements in psycopg's parameter style, converted once.
_CHANNELS_WITH_QUEUED = driver_sql(queries.CHANNELS_WITH_QUEUED)
_CHANNEL_CREDENTIALS = driver_sql(queries.CHANNEL_CREDENTIALS)
_DUE_COUNT = driver_sql(queries.DUE_COUNT)
_CLAIM = driver_sql(queries.CLAIM)
_COMPLETE = driver_sql(queries.COMPLETE)
_PAUSE_CHANNEL_FOR = driver_sql(queries.PAUSE_CHANNEL_FOR)
_PAUSE_RATE_LIMITED = driver_sql(queries.PAUSE_RATE_LIMITED)
_CHANNEL_PROBLEM = driver_sql(queries.CHANNEL_PROBLEM)
_EXTEND_LEASE = driver_sql(queries.EXTEND_LEASE)
_MARK_SENDS_STARTED = driver_sql(queries.MARK_SENDS_STARTED)
_TRACE_CONTEXTS = driver_sql(queries.TRACE_CONTEXTS)


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """One outbox row CLAIM gave this worker, under `claim_token`."""

    id: int
    message_id: uuid.UUID
    channel_id: uuid.UUID
    chat_id: uuid.UUID
    recipient: str
    message_type: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    claim_token: uuid.UUID


@dataclass(frozen=True, slots=True)
class Completion:
    """What becomes of one claimed row (a column of COMPLETE's input)."""

    id: int
    claim_token: uuid.UUID
    status: OutboxStatus  # queued | sent | failed
    refund_attempt: bool
    delay_seconds: float
    error: str | None
    wa_message_id: str | None


@dataclass(frozen=True, slots=True)
class CircuitPause:
    channel_id: uuid.UUID
    seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    """How long a 429 pauses a channel: `base_seconds * 2**strikes` up to
    `cap_seconds` without Retry-After; a Retry-After up to its own cap."""

    base_seconds: float
    cap_seconds: float
    max_retry_after_seconds: float
    reason: str = "rate limited by the provider (HTTP 429)"


@dataclass(frozen=True, slots=True)
class RateLimitPause:
    """A channel's 429s in one batch (PAUSE_RATE_LIMITED says how they count)."""

    channel_id: uuid.UUID
    retry_after: float | None
    requested_at: float | None
    rule: RateLimitRule


@dataclass(frozen=True, slots=True)
class ChannelProblemPause:
    channel_id: uuid.UUID
    reason: str
    cause: PauseCause | None
    until_next_day: bool = False  # a trial's daily limit: paused until the day ends


@dataclass(frozen=True, slots=True)
class RateLimited:
    """Where a rate-limit pause left its channel."""

    paused_until: datetime | None
    strikes: int | None
    new_event: bool | None


@dataclass(frozen=True, slots=True)
class Completed:
    rows: int  # still ours and recorded; the others had been rescued
    rate_limited: dict[uuid.UUID, RateLimited]


class DispatchStore:
    def __init__(self, claims: DirectConnection, completions: DirectConnection,
                 starts: DirectConnection) -> None:
        self._claims = claims
        self._completions = completions
        self._starts = starts

    @classmethod
    def to(cls, database: DatabaseTarget | AsyncEngine, *,
           application_name: str) -> DispatchStore:
        """Connections to `database` (a target, or the one an engine points
        at), opened on first use."""
        return cls(*(DirectConnection.to(database, application_name=application_name)
                     for _ in range(3)))

    def __repr__(self) -> str:
        return f"DispatchStore({self._claims!r}, {self._completions!r}, {self._starts!r})"

    async def aclose(self) -> None:
        await self._claims.aclose()
        await self._completions.aclose()
        await self._starts.aclose()

    async def channels_with_queued(self, *, limit: int) -> list[uuid.UUID]:
        rows = await self._claims.fetchall(_CHANNELS_WITH_QUEUED, {"limit": limit})
        return [channel_id for (channel_id,) in rows]

    async def channel_credentials(self, channel_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
        """The channels' rows a credential cache decrypts (id, workspace_id,
        base_url, status, encrypted_token, key_id); a missing channel has none."""
        return await self._claims.fetchdicts(_CHANNEL_CREDENTIALS,
                                             {"channel_ids": list(channel_ids)})

    async def due_count(self) -> int:
        """Rows due now."""
        row = await self._claims.fetchone(_DUE_COUNT, {})
        assert row is not None, "count(*) always returns one row"
        return int(row[0])

    async def claim(self, *, batch_size: int, per_channel: int,
                    lease_seconds: float) -> list[ClaimedRow]:
        """Up to `batch_size` due rows, committed as ours for `lease_seconds`."""
        token = uuid.uuid4()
        raw = await self._claims.fetchall(_CLAIM, {
            "per_channel": per_channel,
            "batch_size": batch_size,
            "claim_token": token,
            "lease_seconds": lease_seconds,
        })
        return [ClaimedRow(id_, message_id, channel_id, chat_id, recipient, message_type,
                           payload, attempts, max_attempts, token)
                for (id_, message_id, channel_id, chat_id, recipient, message_type, payload,
                     attempts, max_attempts) in raw]

    async def trace_contexts(self, ids: Sequence[int]) -> dict[int, dict[str, str]]:
        """The enqueue trace contexts of these rows, those that have one
        (asked only while tracing, see outbox/tracing.py)."""
        rows = await self._claims.fetchall(_TRACE_CONTEXTS, {"ids": list(ids)})
        return {id_: ctx for id_, ctx in rows}

    async def mark_sends_started(self, rows: Sequence[ClaimedRow]) -> None:
        """Record (committed) that these rows' requests are about to start."""
        await self._starts.execute(_MARK_SENDS_STARTED, {
            "ids": [r.id for r in rows],
            "claim_tokens": list({r.claim_token for r in rows})})

    async def complete(
        self,
        rows: Sequence[Completion],
        *,
        circuit: Sequence[CircuitPause] = (),
        rate_limited: Sequence[RateLimitPause] = (),
        problems: Sequence[ChannelProblemPause] = (),
    ) -> Completed:
        """Record the rows, and the channel pauses with them in one
        transaction (alone, the rows need none: COMPLETE is one statement)."""
        params = {
            "ids": [c.id for c in rows],
            "claim_tokens": [c.claim_token for c in rows],
            "statuses": [c.status for c in rows],
            "refunds": [1 if c.refund_attempt else 0 for c in rows],
            "delays": [c.delay_seconds for c in rows],
            "errors": [c.error for c in rows],
            "wa_message_ids": [c.wa_message_id for c in rows],
        }
        db = self._completions
        if not (circuit or rate_limited or problems):
            return Completed(_completed(await db.fetchone(_COMPLETE, params)), {})
        paused: dict[uuid.UUID, RateLimited] = {}
        async with db.transaction():
            completed = _completed(await db.fetchone(_COMPLETE, params))
            for trip in circuit:
                await db.execute(_PAUSE_CHANNEL_FOR, {
                    "channel_id": trip.channel_id, "seconds": trip.seconds,
                    "reason": trip.reason})
            for event in rate_limited:
                rule = event.rule
                row = await db.fetchone(_PAUSE_RATE_LIMITED, {
                    "channel_id": event.channel_id, "retry_after": event.retry_after,
                    "requested_at": event.requested_at, "base_seconds": rule.base_seconds,
                    "cap_seconds": rule.cap_seconds,
                    "max_retry_after": rule.max_retry_after_seconds, "reason": rule.reason,
                })
                paused[event.channel_id] = RateLimited(*row) if row else RateLimited(
                    None, None, None)
            for problem in problems:
                await db.execute(_CHANNEL_PROBLEM, {
                    "channel_id": problem.channel_id, "reason": problem.reason,
                    "cause": problem.cause, "until_next_day": problem.until_next_day})
        return Completed(completed, paused)

    async def extend_leases(self, claim_tokens: Sequence[uuid.UUID], *,
                            lease_seconds: float) -> None:
        """Rows still sending under these claims keep their lease
        `lease_seconds` longer (rows locked by a completion are skipped)."""
        await self._completions.execute(_EXTEND_LEASE, {
            "claim_tokens": list(claim_tokens), "lease_seconds": lease_seconds})


def _completed(row: tuple[Any, ...] | None) -> int:
    """COMPLETE's first column: rows that were still ours (the rest were rescued)."""
    assert row is not None, "COMPLETE always returns one row"
    return int(row[0])
