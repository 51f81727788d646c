"""Record what happened to claimed rows, in batches (the model: River's jobcompleter).

Senders hand in one decision per row (`record`); a flusher task writes them
with one COMPLETE per batch, every few milliseconds, so the database sees
one statement per batch rather than one per message. The channel pauses a
batch brings (a 429, a channel problem, a tripped circuit breaker) go in
the same transaction.

* A lost connection is waited out (`DatabaseOutage`) and the batch tried
  again: its rows stay ours while the heartbeat or the lease holds.
* Any other database error is a row the database refuses: the batch is
  split in halves until the refused row stands alone; the others are
  recorded, and that one is left to the lease rescuer.
* A flush is never cancelled half-way: stopping waits for the one in
  progress, then records what is left.

The completer also keeps the books: rows claimed and not yet recorded
(`outstanding`), the claims they belong to (for the heartbeat), and the
summary's counts. Observers see every recorded decision.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import Callable

import structlog

from outbox import tracing
from outbox.db.direct import DatabaseUnavailable, StatementRefused
from outbox.db.dispatch_store import (
    ChannelProblemPause,
    CircuitPause,
    ClaimedRow,
    Completion,
    DispatchStore,
    RateLimitPause,
    RateLimitRule,
)
from outbox.dispatch.config import DispatcherConfig
from outbox.dispatch.credentials import CredentialCache
from outbox.dispatch.outage import DatabaseOutage
from outbox.dispatch.outcomes import (
    ChannelAction,
    Decision,
    Kind,
    RateLimitEvent,
    is_daily_trial_limit,
)
from outbox.dispatch.summary import Summary

log = structlog.get_logger(__name__)

FLUSH_MAX_ROWS = 500  # flush at once when this many decisions are waiting
FLUSH_STATEMENT_ROWS = FLUSH_MAX_ROWS * 4  # the most one COMPLETE records
MAX_RETRY_AFTER_SECONDS = 86400.0  # a provider's Retry-After is honoured up to a day

Observer = Callable[[ClaimedRow, Decision], None]
Batch = list[tuple[ClaimedRow, Decision]]


class Completer:
    def __init__(self, store: DispatchStore, credentials: CredentialCache,
                 config: DispatcherConfig, summary: Summary, outage: DatabaseOutage, *,
                 observers: list[Observer] | None = None) -> None:
        self._store = store
        self._credentials = credentials
        self._config = config
        self.summary = summary
        self._outage = outage
        self._observers = list(observers or [])
        self._rate_limit = RateLimitRule(
            base_seconds=config.rate_limit_pause_seconds,
            cap_seconds=config.rate_limit_pause_cap_seconds,
            max_retry_after_seconds=MAX_RETRY_AFTER_SECONDS)
        self._circuit_reason = (f"circuit open: {config.circuit_breaker_failures} "
                                "consecutive transient failures")

        self.outstanding = 0  # claimed and not yet recorded
        self.flushes = 0  # batches recorded so far
        self.progress = asyncio.Event()  # a flush committed: slots freed, chats unblocked
        self.stopping = False  # record promptly: the dispatcher is on its way out
        self._by_token: Counter[uuid.UUID] = Counter()  # outstanding rows per claim
        self._pending: Batch = []
        self._pending_ready = asyncio.Event()
        self._flush_lock = asyncio.Lock()  # one flush at a time; stopping waits for it
        self._breaker_trips: set[uuid.UUID] = set()  # to write with the next batch
        self._flusher: asyncio.Task[None] | None = None

    # --- what the dispatcher tells us ---------------------------------------------

    def claimed(self, rows: list[ClaimedRow]) -> None:
        for row in rows:
            self._by_token[row.claim_token] += 1
        self.outstanding += len(rows)

    def claim_tokens(self) -> list[uuid.UUID]:
        """Claims with rows not yet recorded (their leases must hold)."""
        return list(self._by_token)

    def breaker_tripped(self, channel_id: uuid.UUID) -> None:
        """Pause the channel in the database with the next batch."""
        self._breaker_trips.add(channel_id)

    def record(self, row: ClaimedRow, decision: Decision) -> None:
        self._pending.append((row, decision))
        # Wake the flusher on the first decision (it then waits a moment to
        # gather more), on a full batch, and promptly while stopping.
        if len(self._pending) in (1, FLUSH_MAX_ROWS) or self.stopping:
            self._pending_ready.set()

    # --- the flusher ------------------------------------------------------------------

    def start(self) -> None:
        self.stopping = False
        self._flusher = asyncio.create_task(self._flush_forever(), name="outbox-flusher")

    async def stop(self) -> None:
        """Stop the flusher (never half-way through a flush), then record
        everything still pending."""
        if self._flusher is not None:
            async with self._flush_lock:
                self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush_all()

    async def _flush_forever(self) -> None:
        while True:
            await self._pending_ready.wait()
            self._pending_ready.clear()
            if len(self._pending) < FLUSH_MAX_ROWS:
                # Let a few more finish so one statement records many.
                await asyncio.sleep(self._config.flush_interval_seconds)
            await self.flush_all()

    async def flush_all(self) -> None:
        async with self._flush_lock:
            while self._pending:
                await self._flush_some()

    async def _flush_some(self) -> None:
        batch = self._pending[:FLUSH_STATEMENT_ROWS]
        del self._pending[:len(batch)]
        try:
            await self._complete_isolating(batch)
        except BaseException:
            # Cancelled (or worse) before the batch was recorded: put it back,
            # so the final flush on the way out records it.
            self._pending[:0] = batch
            raise
        self._outage.ok()
        for row, _ in batch:
            self._by_token[row.claim_token] -= 1
            if self._by_token[row.claim_token] <= 0:
                del self._by_token[row.claim_token]
        self.outstanding -= len(batch)
        self.flushes += 1
        self.progress.set()

    async def _complete_isolating(self, batch: Batch) -> None:
        """Record a batch; wait out an outage; bisect around refused rows."""
        while True:
            try:
                await self._complete(batch)
                return
            except DatabaseUnavailable as exc:
                await self._outage.wait("complete", exc)
            except StatementRefused as exc:
                if len(batch) == 1:
                    row, decision = batch[0]
                    log.error("completion_refused", outbox_id=row.id,
                              channel_id=str(row.channel_id), outcome=decision.kind.value,
                              error=str(exc), hint="left to the lease rescuer")
                    return
                half = len(batch) // 2
                await self._complete_isolating(batch[:half])
                await self._complete_isolating(batch[half:])
                return

    async def _complete(self, batch: Batch) -> None:
        rows = [Completion(r.id, r.claim_token, d.outbox_status, d.refund_attempt,
                           d.delay_seconds, d.error, d.wa_message_id) for r, d in batch]
        rate_limited: dict[uuid.UUID, RateLimitEvent] = {}
        problems: dict[uuid.UUID, Decision] = {}
        for row, d in batch:
            if d.channel_action is ChannelAction.RATE_LIMIT:
                rate_limited[row.channel_id] = RateLimitEvent.of(d).merge(
                    rate_limited.get(row.channel_id))
            elif d.channel_action is not ChannelAction.NONE:
                problems[row.channel_id] = d
        trips, self._breaker_trips = self._breaker_trips, set()
        try:
            with tracing.span("outbox.complete", attributes={"outbox.rows": len(rows)}):
                done = await self._store.complete(
                    rows,
                    circuit=[CircuitPause(c, self._config.circuit_breaker_pause_seconds,
                                          self._circuit_reason) for c in trips],
                    rate_limited=[RateLimitPause(c, e.retry_after, e.requested_at,
                                                 self._rate_limit)
                                  for c, e in rate_limited.items()],
                    problems=[ChannelProblemPause(c, d.error or "channel problem",
                                                  d.pause_cause,
                                                  until_next_day=is_daily_trial_limit(d))
                              for c, d in problems.items()])
        except BaseException:
            self._breaker_trips |= trips  # written by the retry
            raise
        for channel_id in trips:
            log.warning("channel_circuit_open", channel_id=str(channel_id),
                        pause_seconds=self._config.circuit_breaker_pause_seconds)
        for channel_id, event in rate_limited.items():
            paused = done.rate_limited.get(channel_id)
            until = paused.paused_until if paused else None
            log.warning("channel_rate_limited", channel_id=str(channel_id),
                        retry_after=event.retry_after,
                        new_event=paused.new_event if paused else None,
                        paused_until=until.isoformat() if until else None,
                        strikes=paused.strikes if paused else None)
        for channel_id, d in problems.items():
            self._credentials.forget(channel_id)
            log.error("channel_paused", channel_id=str(channel_id), reason=d.error)
        self._account(batch, done.rows, paused={*trips, *rate_limited, *problems})

    def _account(self, batch: Batch, completed: int, *, paused: set[uuid.UUID]) -> None:
        stale = len(batch) - completed
        s = self.summary
        s.stale += stale
        for row, d in batch:
            if d.kind is Kind.SENT:
                s.sent += 1
            elif d.kind is Kind.RETRIED:
                s.retried += 1
            elif d.kind is Kind.FAILED:
                s.failed += 1
            else:
                s.released += 1
            if d.ambiguous:
                s.ambiguous += 1
            for observer in self._observers:
                observer(row, d)
        s.paused_channels.update(paused)
        if stale:
            log.warning("stale_completions", rows=stale,
                        hint="lease expired before completion; rows were rescued")
