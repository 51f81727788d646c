"""The dispatcher: claim due rows, send them, record what happened.

A pipeline rather than a batch-at-a-time loop, so the HTTP side never idles
while the database works:

    claimer ──rows──► senders (bounded globally and per channel) ──decisions──► flusher
       ▲                                                                          │
       └──────────────── a completion frees a slot / unblocks a chat ◄────────────┘

* The claimer takes a batch whenever enough slots are free (rows claimed and
  not yet completed stay under `concurrency`). The claim commits before any
  HTTP request (db/queries.py CLAIM).
* Senders run one task per row; a per-channel semaphore bounds each channel.
  A row whose channel was paused meanwhile (a 429 on a sibling) is released
  unsent.
* The flusher applies decisions in batches (db/queries.py COMPLETE) every
  few milliseconds, so the database sees one statement per batch, not one
  per message.
* A heartbeat extends the lease of rows still in flight.
* Claims and completions run on two psycopg connections of the
  dispatcher's own (db/direct.py: through SQLAlchemy's async layer they cost
  about twice the client CPU); the rest (credentials, heartbeat) uses the
  engine's pool. `aclose()` closes them; a Runtime closes its dispatchers.
* Before its first claim the dispatcher decrypts, all at once, the tokens of
  the channels that have queued rows.

`drain` sends what is due and returns when nothing is left to do; the
daemon runs it as its tick, cron mode (`dispatch --once`) runs it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.db import queries
from outbox.db.direct import DatabaseUnavailable, DirectConnection, StatementRefused
from outbox.db.driver_sql import driver_sql
from outbox.dispatch.backoff import RetryPolicy
from outbox.dispatch.credentials import CredentialCache, Credentials, Unusable
from outbox.dispatch.outcomes import ChannelAction, Decision, Kind, RateLimitEvent, decide, release
from outbox.providers.base import Outcome, OutgoingMessage, Provider

log = structlog.get_logger(__name__)

FLUSH_INTERVAL_SECONDS = 0.02  # how long a finished send may wait to be recorded
FLUSH_MAX_ROWS = 500  # flush at once when this many decisions are waiting
DB_RETRY_MAX_SECONDS = 30.0  # backoff ceiling while the database is unreachable
SHUTDOWN_GRACE_SECONDS = 30.0  # in-flight sends get this long to finish on stop
SUMMARY_LOG_SECONDS = 10.0
APPLICATION_NAME = "outbox-dispatcher"  # what pg_stat_activity shows for its connections
MAX_RETRY_AFTER_SECONDS = 86400.0  # a provider's Retry-After is honoured up to a day
WARM_CHANNELS_MAX = 64  # tokens decrypted before the first claim (~50 ms of CPU each)


@dataclass(frozen=True, slots=True)
class DispatcherConfig:
    batch_size: int = 200
    per_channel_claim: int = 50
    lease_seconds: float = 60.0
    concurrency: int = 256
    channel_concurrency: int = 32
    poll_interval_seconds: float = 1.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    rate_limit_pause_seconds: float = 30.0
    rate_limit_pause_cap_seconds: float = 900.0
    flush_interval_seconds: float = FLUSH_INTERVAL_SECONDS
    circuit_breaker_failures: int = 20  # 0: off
    circuit_breaker_pause_seconds: float = 30.0

    @classmethod
    def from_settings(cls, settings: Any) -> DispatcherConfig:
        return cls(
            batch_size=settings.batch_size,
            per_channel_claim=settings.per_channel_claim,
            lease_seconds=settings.lease_seconds,
            concurrency=settings.concurrency,
            channel_concurrency=settings.channel_concurrency,
            poll_interval_seconds=settings.poll_interval_seconds,
            retry=RetryPolicy(settings.backoff_base_seconds, settings.backoff_cap_seconds),
            rate_limit_pause_seconds=settings.rate_limit_pause_seconds,
            rate_limit_pause_cap_seconds=settings.rate_limit_pause_cap_seconds,
            circuit_breaker_failures=settings.circuit_breaker_failures,
            circuit_breaker_pause_seconds=settings.circuit_breaker_pause_seconds,
        )


@dataclass(frozen=True, slots=True)
class ClaimedRow:
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


@dataclass(slots=True)
class Summary:
    """What a dispatcher did; `dispatch --once` prints it."""

    claimed: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    # Sends whose outcome we could not know (timeout after the request left):
    # if the provider did accept them, the retry is a duplicate.
    ambiguous: int = 0
    # Completions that found their row already rescued (lease lost).
    stale: int = 0
    paused_channels: set[uuid.UUID] = field(default_factory=set)
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        return (f"sent {self.sent}, retried {self.retried}, failed {self.failed}, "
                f"released {self.released}, paused channels {len(self.paused_channels)} "
                f"in {self.seconds:.1f}s ({rate:,.0f}/s)")

    def as_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed, "sent": self.sent, "retried": self.retried,
            "failed": self.failed, "released": self.released, "ambiguous": self.ambiguous,
            "stale": self.stale,
            "paused_channels": sorted(str(c) for c in self.paused_channels),
            "seconds": round(self.seconds, 3),
        }


Observer = Callable[[ClaimedRow, Decision], None]

# The hot statements, in psycopg's parameter style for DirectConnection.
_CLAIM = driver_sql(queries.CLAIM)
_COMPLETE = driver_sql(queries.COMPLETE)
_PAUSE_CHANNEL_FOR = driver_sql(queries.PAUSE_CHANNEL_FOR)
_PAUSE_RATE_LIMITED = driver_sql(queries.PAUSE_RATE_LIMITED)
_CHANNEL_PROBLEM = driver_sql(queries.CHANNEL_PROBLEM)


class Dispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        provider: Provider,
        credentials: CredentialCache,
        config: DispatcherConfig | None = None,
        *,
        observers: list[Observer] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        # CLAIM and COMPLETE run on connections of our own, outside
        # SQLAlchemy (db/direct.py says why), one per role so a claim never
        # waits for a completion. Each is one statement, atomic on its own,
        # so it runs in autocommit: no BEGIN and COMMIT round trips.
        self._claim_db = DirectConnection.for_engine(engine, application_name=APPLICATION_NAME)
        self._complete_db = DirectConnection.for_engine(engine,
                                                        application_name=APPLICATION_NAME)
        self._provider = provider
        self._credentials = credentials
        self.config = config or DispatcherConfig()
        self._observers = list(observers or [])
        self._rng = rng or random.Random()
        self.summary = Summary()

        self._outstanding = 0  # claimed and not yet completed (flushed)
        self._flushes = 0  # completions committed so far
        self._by_token: Counter[uuid.UUID] = Counter()  # outstanding rows per claim
        self._pending: list[tuple[ClaimedRow, Decision]] = []
        self._pending_ready = asyncio.Event()
        self._flush_lock = asyncio.Lock()  # one flush at a time; shutdown waits for it
        self._progress = asyncio.Event()  # a flush committed: slots freed, chats unblocked
        self._wake = asyncio.Event()  # NOTIFY or an operator asks us to look now
        self._channel_sems: dict[uuid.UUID, asyncio.Semaphore] = {}
        # Requests on the wire never exceed `concurrency`; claimed rows may
        # (see _loop), so the next batch is ready when a slot frees up.
        self._send_slots = asyncio.Semaphore(self.config.concurrency)
        self._paused_until: dict[uuid.UUID, float] = {}  # monotonic, local view
        self._transient_streak: Counter[uuid.UUID] = Counter()  # for the circuit breaker
        self._breaker_trips: set[uuid.UUID] = set()  # to write on the next flush
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._db_failures = 0
        self._warmed = False

    # --- public ------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the dispatcher's own database connections (after its last drain)."""
        await self._claim_db.aclose()
        await self._complete_db.aclose()

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def wake(self) -> None:
        """Look for work now (called on NOTIFY; debounced by the event)."""
        self._wake.set()

    async def drain(self, *, stop: asyncio.Event | None = None, limit: int | None = None,
                    max_seconds: float | None = None) -> Summary:
        """Send what is due, then return: when nothing is claimable, nothing is
        in flight and no wake-up came in meanwhile; or at `limit` rows, after
        `max_seconds`, or when `stop` is set (then gracefully). The daemon's
        tick and cron mode (`dispatch --once`) both run this."""
        return await self._loop(stop=stop or asyncio.Event(), limit=limit,
                                max_seconds=max_seconds)

    # --- the loop ----------------------------------------------------------

    async def _loop(self, *, stop: asyncio.Event, limit: int | None = None,
                    max_seconds: float | None = None) -> Summary:
        started = time.monotonic()
        self._stopping = False
        deadline = started + max_seconds if max_seconds else math.inf
        flusher = asyncio.create_task(self._flush_forever(), name="outbox-flusher")
        heartbeat = asyncio.create_task(self._heartbeat_forever(), name="outbox-heartbeat")
        reporter = asyncio.create_task(self._report_forever(), name="outbox-reporter")
        cfg = self.config
        # Claim again once a quarter of a batch is free: big enough batches to
        # be cheap, early enough to keep the senders busy.
        refill = max(1, min(cfg.batch_size, cfg.concurrency) // 4)
        # Claim one batch ahead of the senders: without it, a send slot idles
        # through the flush, the completion and the next claim (measured at
        # L=64 and 200 ms: 0.67 of the ideal rate with it idle, 0.93 without).
        row_budget = cfg.concurrency + min(cfg.batch_size, cfg.concurrency)
        try:
            if not self._warmed:
                await self._warm_credentials()
            while not stop.is_set() and time.monotonic() < deadline:
                free = row_budget - self._outstanding
                remaining = math.inf if limit is None else limit - self.summary.claimed
                if remaining <= 0:
                    if self._outstanding == 0:
                        break
                    await self._wait(stop, self._progress,
                                     seconds=cfg.poll_interval_seconds)
                    continue
                if free < refill and self._outstanding > 0 and free < remaining:
                    await self._wait(stop, self._progress,
                                     seconds=cfg.poll_interval_seconds)
                    continue
                budget = int(min(free, remaining))
                self._wake.clear()
                flushes = self._flushes
                rows = await self._claim(min(budget, cfg.batch_size))
                if rows is None:  # database unreachable: backed off already
                    continue
                if rows:
                    await self._start_sends(rows)
                    continue
                # Done when nothing is due and nothing in flight. But a
                # completion committed while the claim ran may have unblocked
                # chats its snapshot saw as busy: then claim again (a drain
                # used to stop here with work due).
                if (self._outstanding == 0 and not self._wake.is_set()
                        and self._flushes == flushes):
                    break
                # Nothing claimable: wait for a completion (it may unblock a
                # chat), a NOTIFY, or the poll interval.
                await self._wait(stop, self._progress, self._wake,
                                 seconds=cfg.poll_interval_seconds)
        finally:
            self._stopping = True
            await self._finish_in_flight()
            # Never cancel a flush half-way: wait for the one in progress.
            async with self._flush_lock:
                flusher.cancel()
            heartbeat.cancel()
            reporter.cancel()
            for t in (flusher, heartbeat, reporter):
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await self._flush_all()
            self.summary.seconds += time.monotonic() - started
        return self.summary

    async def _wait(self, stop: asyncio.Event, *events: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.create_task(e.wait()) for e in (stop, *events)]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        for e in events:
            e.clear()

    # --- claim ---------------------------------------------------------------

    async def _warm_credentials(self) -> None:
        """Decrypt the tokens of channels with queued rows, all at once,
        before the first claim. Otherwise each claim brings a few new channels
        (per_channel_claim rows each) and its sends wait ~50 ms per token in
        turn: with 20 channels, the first second ran at half speed. Once per
        dispatcher: tokens stay cached (by ciphertext) after that."""
        try:
            async with self._autocommit.connect() as conn:
                ids = (await conn.execute(text(queries.CHANNELS_WITH_QUEUED),
                                          {"limit": WARM_CHANNELS_MAX})).scalars().all()
            await self._credentials.get_many(ids)
        except DBAPIError as exc:
            # Not fatal: claims load what they need, and handle the outage.
            log.warning("credentials_warmup_failed", error=type(exc).__name__)
            return
        self._warmed = True
        log.debug("credentials_warmed", channels=len(ids))

    async def _claim(self, n: int) -> list[ClaimedRow] | None:
        token = uuid.uuid4()
        cfg = self.config
        try:
            raw = await self._claim_db.fetchall(_CLAIM, {
                "per_channel": min(cfg.per_channel_claim, n),
                "batch_size": n,
                "claim_token": token,
                "lease_seconds": cfg.lease_seconds,
            })
        except (DatabaseUnavailable, StatementRefused) as exc:  # back off, try again
            await self._database_trouble("claim", exc)
            return None
        self._database_ok()
        rows = [ClaimedRow(id_, message_id, channel_id, chat_id, recipient, message_type,
                           payload, attempts, max_attempts, token)
                for (id_, message_id, channel_id, chat_id, recipient, message_type, payload,
                     attempts, max_attempts) in raw]
        if rows:
            self._outstanding += len(rows)
            self._by_token[token] += len(rows)
            self.summary.claimed += len(rows)
            log.debug("claimed", rows=len(rows), claim_token=str(token))
        return rows

    # --- send ----------------------------------------------------------------

    async def _start_sends(self, rows: list[ClaimedRow]) -> None:
        try:
            creds = await self._credentials.get_many({r.channel_id for r in rows})
        except DBAPIError as exc:
            # Can't read tokens now: give the rows back and retry later.
            for row in rows:
                self._record(row, release())
            await self._database_trouble("credentials", exc)
            return
        for row in rows:
            task = asyncio.create_task(self._send_one(row, creds[row.channel_id]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_one(self, row: ClaimedRow, creds: Credentials | Unusable) -> None:
        if isinstance(creds, Unusable):
            self._record(row, Decision("queued", Kind.RELEASED, refund_attempt=True,
                                       error=creds.reason, channel_action=ChannelAction.PAUSE,
                                       pause_cause="credentials"))
            return
        sem = self._channel_sems.get(row.channel_id)
        if sem is None:
            sem = self._channel_sems[row.channel_id] = asyncio.Semaphore(
                self.config.channel_concurrency)
        async with sem, self._send_slots:
            if self._stopping or self._locally_paused(row.channel_id):
                self._record(row, release())
                return
            requested_at = time.time()
            result = await self._provider.send(
                base_url=creds.base_url, token=creds.token,
                message=OutgoingMessage(row.recipient, row.message_type, row.payload),
            )
            decision = decide(attempts=row.attempts, max_attempts=row.max_attempts,
                              result=result, policy=self.config.retry, rng=self._rng)
            if decision.channel_action is ChannelAction.RATE_LIMIT:
                decision = dataclasses.replace(decision, requested_at=requested_at)
            self._watch_circuit(row.channel_id, result.outcome)
            if decision.channel_action is not ChannelAction.NONE:
                # Stop this channel's other claimed rows right now; the flush
                # makes it a fact in the database for every worker.
                pause = (decision.retry_after if decision.retry_after is not None
                         else self.config.rate_limit_pause_seconds)
                if decision.channel_action is not ChannelAction.RATE_LIMIT:
                    pause = self.config.lease_seconds
                self._pause_locally(row.channel_id, pause)
        self._record(row, decision)

    def _watch_circuit(self, channel_id: uuid.UUID, outcome: Outcome) -> None:
        """Count consecutive transient failures per channel; trip at the threshold."""
        threshold = self.config.circuit_breaker_failures
        if outcome is Outcome.TRANSIENT:
            self._transient_streak[channel_id] += 1
            if threshold and self._transient_streak[channel_id] >= threshold:
                self._transient_streak[channel_id] = 0
                self._breaker_trips.add(channel_id)
                self._pause_locally(channel_id, self.config.circuit_breaker_pause_seconds)
        elif outcome is not Outcome.RATE_LIMITED:
            # Any answer that isn't a transient failure shows the channel is reachable.
            self._transient_streak.pop(channel_id, None)

    def _locally_paused(self, channel_id: uuid.UUID) -> bool:
        until = self._paused_until.get(channel_id)
        if until is None:
            return False
        if until <= time.monotonic():
            del self._paused_until[channel_id]
            return False
        return True

    def _pause_locally(self, channel_id: uuid.UUID, seconds: float) -> None:
        # Claims respect the database's pause; this only covers rows already
        # claimed, so it never needs to outlive a lease.
        seconds = min(seconds, self.config.lease_seconds)
        until = time.monotonic() + seconds
        self._paused_until[channel_id] = max(until, self._paused_until.get(channel_id, 0.0))

    def _record(self, row: ClaimedRow, decision: Decision) -> None:
        self._pending.append((row, decision))
        # Wake the flusher on the first decision (it then waits a moment to
        # gather more), on a full batch, and promptly while stopping.
        if len(self._pending) in (1, FLUSH_MAX_ROWS) or self._stopping:
            self._pending_ready.set()

    # --- complete --------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while True:
            await self._pending_ready.wait()
            self._pending_ready.clear()
            if len(self._pending) < FLUSH_MAX_ROWS:
                # Let a few more finish so one statement records many.
                await asyncio.sleep(self.config.flush_interval_seconds)
            await self._flush_all()

    async def _flush_all(self) -> None:
        async with self._flush_lock:
            while self._pending:
                await self._flush_some()

    async def _flush_some(self) -> None:
        batch = self._pending[:FLUSH_MAX_ROWS * 4]
        del self._pending[:len(batch)]
        try:
            await self._complete_isolating(batch)
        except BaseException:
            # Cancelled (or worse) before the batch was recorded: put it back,
            # so the final flush on the way out records it.
            self._pending[:0] = batch
            raise
        self._database_ok()
        for row, _ in batch:
            self._by_token[row.claim_token] -= 1
            if self._by_token[row.claim_token] <= 0:
                del self._by_token[row.claim_token]
        self._outstanding -= len(batch)
        self._flushes += 1
        self._progress.set()

    async def _complete_isolating(self, batch: list[tuple[ClaimedRow, Decision]]) -> None:
        """Record a batch. A lost connection is waited out (the rows stay ours
        while the heartbeat or the lease holds); any other database error is a
        row the database refuses, so the batch is split to record the others,
        and a row refused on its own is left to the lease rescuer."""
        while True:
            try:
                await self._complete(batch)
                return
            except DatabaseUnavailable as exc:
                await self._database_trouble("complete", exc)
            except StatementRefused as exc:
                if len(batch) == 1:
                    row, decision = batch[0]
                    log.error("completion_refused", outbox_id=row.id,
                              channel_id=str(row.channel_id), outcome=decision.kind.value,
                              error=str(exc), hint="left to the lease rescuer")
                    return
                for item in batch:
                    await self._complete_isolating([item])
                return

    async def _complete(self, batch: list[tuple[ClaimedRow, Decision]]) -> None:
        params = {
            "ids": [r.id for r, _ in batch],
            "claim_tokens": [r.claim_token for r, _ in batch],
            "statuses": [d.outbox_status for _, d in batch],
            "refunds": [1 if d.refund_attempt else 0 for _, d in batch],
            "delays": [d.delay_seconds for _, d in batch],
            "errors": [d.error for _, d in batch],
            "wa_message_ids": [d.wa_message_id for _, d in batch],
        }
        rate_limited: dict[uuid.UUID, RateLimitEvent] = {}
        problems: dict[uuid.UUID, Decision] = {}
        for row, d in batch:
            if d.channel_action is ChannelAction.RATE_LIMIT:
                prev = rate_limited.get(row.channel_id)
                rate_limited[row.channel_id] = RateLimitEvent.of(d).merge(prev)
            elif d.channel_action is not ChannelAction.NONE:
                problems[row.channel_id] = d
        trips, self._breaker_trips = self._breaker_trips, set()
        try:
            completed = await self._write_completion(params, trips, rate_limited, problems)
        except BaseException:
            self._breaker_trips |= trips  # written by the retry
            raise
        self._account(batch, completed, trips, rate_limited, problems)

    async def _write_completion(
        self,
        params: dict[str, Any],
        trips: set[uuid.UUID],
        rate_limited: dict[uuid.UUID, RateLimitEvent],
        problems: dict[uuid.UUID, Decision],
    ) -> int:
        """Record the batch's rows, and any channel pauses with them in one
        transaction; returns how many rows were still ours to complete."""
        db = self._complete_db
        if not (trips or rate_limited or problems):
            return _completed(await db.fetchone(_COMPLETE, params))  # alone: autocommit
        async with db.transaction():
            completed = _completed(await db.fetchone(_COMPLETE, params))
            for channel_id in trips:
                await db.execute(_PAUSE_CHANNEL_FOR, {
                    "channel_id": channel_id,
                    "seconds": self.config.circuit_breaker_pause_seconds,
                    "reason": f"circuit open: {self.config.circuit_breaker_failures} "
                              "consecutive transient failures",
                })
                log.warning("channel_circuit_open", channel_id=str(channel_id),
                            pause_seconds=self.config.circuit_breaker_pause_seconds)
            for channel_id, event in rate_limited.items():
                paused = await db.fetchone(_PAUSE_RATE_LIMITED, {
                    "channel_id": channel_id, "retry_after": event.retry_after,
                    "requested_at": event.requested_at,
                    "base_seconds": self.config.rate_limit_pause_seconds,
                    "cap_seconds": self.config.rate_limit_pause_cap_seconds,
                    "max_retry_after": MAX_RETRY_AFTER_SECONDS,
                    "reason": "rate limited by the provider (HTTP 429)",
                })
                paused_until, strikes, new_event = paused if paused else (None, None, None)
                log.warning("channel_rate_limited", channel_id=str(channel_id),
                            retry_after=event.retry_after, new_event=new_event,
                            paused_until=paused_until.isoformat() if paused_until else None,
                            strikes=strikes)
            for channel_id, d in problems.items():
                await db.execute(_CHANNEL_PROBLEM, {
                    "channel_id": channel_id,
                    "reason": d.error or "channel problem", "cause": d.pause_cause,
                })
                self._credentials.forget(channel_id)
                log.error("channel_paused", channel_id=str(channel_id), reason=d.error)
        return completed

    def _account(
        self,
        batch: list[tuple[ClaimedRow, Decision]],
        completed: int,
        trips: set[uuid.UUID],
        rate_limited: dict[uuid.UUID, RateLimitEvent],
        problems: dict[uuid.UUID, Decision],
    ) -> None:
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
        s.paused_channels.update(rate_limited)
        s.paused_channels.update(trips)
        s.paused_channels.update(problems)
        if stale:
            log.warning("stale_completions", rows=stale,
                        hint="lease expired before completion; rows were rescued")

    # --- lease, shutdown, trouble ------------------------------------------------

    async def _heartbeat_forever(self) -> None:
        interval = self.config.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            tokens = list(self._by_token)
            if not tokens:
                continue
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(text(queries.EXTEND_LEASE), {
                        "claim_tokens": tokens, "lease_seconds": self.config.lease_seconds})
            except DBAPIError as exc:
                log.warning("lease_extension_failed", error=type(exc).__name__)

    async def _finish_in_flight(self) -> None:
        """Stop: unsent rows are released (they check `_stopping`); sends
        already on the wire get a grace period to finish."""
        if not self._tasks:
            return
        grace = min(SHUTDOWN_GRACE_SECONDS, self.config.lease_seconds * 0.8)
        _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
        if pending:
            log.warning("shutdown_left_in_flight", rows=len(pending),
                        hint="their lease will expire and the rescuer requeues them")
            for t in pending:
                t.cancel()

    async def _report_forever(self) -> None:
        last = (0, 0, 0)
        while True:
            await asyncio.sleep(SUMMARY_LOG_SECONDS)
            s = self.summary
            now = (s.sent, s.retried, s.failed)
            if now != last:
                log.info("dispatch_progress", sent=s.sent, retried=s.retried, failed=s.failed,
                         released=s.released, in_flight=self._outstanding)
                last = now

    async def _database_trouble(self, what: str, exc: BaseException) -> None:
        self._db_failures += 1
        delay = min(DB_RETRY_MAX_SECONDS, 0.5 * 2 ** min(self._db_failures - 1, 10))
        if self._db_failures == 1:
            # Once per outage, not once per retry.
            log.error("database_unavailable", during=what,
                      error=type(exc.__cause__ or exc).__name__,
                      detail=str(exc).splitlines()[0][:200] if str(exc) else "",
                      retry_in_seconds=delay)
        await asyncio.sleep(delay * self._rng.uniform(0.8, 1.2))

    def _database_ok(self) -> None:
        if self._db_failures:
            log.info("database_reachable_again", failed_attempts=self._db_failures)
            self._db_failures = 0


def _completed(row: tuple[Any, ...] | None) -> int:
    """COMPLETE's first column: rows that were still ours (the rest were rescued)."""
    assert row is not None, "COMPLETE always returns one row"
    return int(row[0])
