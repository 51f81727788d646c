"""The dispatcher: claim due rows, send them, record what happened.

A pipeline rather than a batch-at-a-time loop, so the HTTP side never idles
while the database works:

    claimer ──rows──► senders (bounded globally and per channel) ──decisions──► completer
       ▲                                                                            │
       └───────────────── a completion frees a slot / unblocks a chat ◄─────────────┘

This module is the claim/send loop. Its parts, each in a module of its own:

* `DispatchStore` (db/dispatch_store.py) runs every statement (CLAIM,
  COMPLETE, the pauses, the heartbeat) on the dispatcher's own psycopg
  connections; `aclose()` closes them, and a Runtime closes its dispatchers.
* `Completer` (completer.py) records decisions in batches;
* `SendStarts` (starts.py) records, in batches, that rows' requests are
  about to start (so a dead worker's unsent rows get their attempt back);
* `ChannelGate` (gate.py) holds back a channel's claimed rows after a 429,
  a channel problem, or a tripped circuit breaker: pure, no I/O;
* `DatabaseOutage` (outage.py) waits out a lost database for all of them.

The loop:

* takes a batch whenever enough slots are free (rows claimed and not yet
  recorded stay under `concurrency` plus a batch). The claim commits
  before any HTTP request (db/queries.py CLAIM);
* sends each row on a task of its own; a per-channel semaphore bounds each
  channel. A row whose channel the gate holds back is released unsent; a
  row about to go out is first marked started (`SendStarts`);
* extends the lease of rows still in flight (a heartbeat);
* before its first claim, decrypts, all at once, the tokens of the
  channels that have queued rows.

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
from typing import TYPE_CHECKING, Any

import structlog

from outbox import tracing
from outbox.db.conninfo import DatabaseTarget
from outbox.db.direct import DatabaseError
from outbox.db.dispatch_store import ClaimedRow, DispatchStore
from outbox.dispatch.backoff import OutageBackoff
from outbox.dispatch.completer import Completer, Observer
from outbox.dispatch.config import DispatcherConfig
from outbox.dispatch.credentials import CredentialCache, Credentials, Unusable
from outbox.dispatch.gate import ChannelGate, local_pause_seconds
from outbox.dispatch.outage import DatabaseOutage
from outbox.dispatch.outcomes import ChannelAction, Decision, Kind, decide, release
from outbox.dispatch.starts import SendStarts
from outbox.dispatch.summary import Summary
from outbox.providers.base import OutgoingMessage, Provider
from outbox.states import OutboxStatus, PauseCause

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["ClaimedRow", "Dispatcher", "DispatcherConfig", "Observer", "Summary"]

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_SECONDS = 30.0  # in-flight sends get this long to finish on stop
SUMMARY_LOG_SECONDS = 10.0
APPLICATION_NAME = "outbox-dispatcher"  # what pg_stat_activity shows for its connections
WARM_CHANNELS_MAX = 64  # channels whose credentials are loaded before the first claim


class Dispatcher:
    def __init__(
        self,
        database: DatabaseTarget | AsyncEngine,
        provider: Provider,
        credentials: CredentialCache,
        config: DispatcherConfig | None = None,
        *,
        observers: list[Observer] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._store = DispatchStore.to(database, application_name=APPLICATION_NAME)
        self._provider = provider
        self._credentials = credentials
        self.config = cfg = config or DispatcherConfig()
        self._rng = rng or random.Random()
        self.summary = Summary()
        self._outage = DatabaseOutage(OutageBackoff(rng=self._rng))
        self._completer = Completer(self._store, credentials, cfg, self.summary,
                                    self._outage, observers=observers)
        self._starts = SendStarts(self._store)
        self._gate = ChannelGate(breaker_failures=cfg.circuit_breaker_failures,
                                 breaker_pause_seconds=cfg.circuit_breaker_pause_seconds,
                                 max_pause_seconds=cfg.lease_seconds)

        self._wake = asyncio.Event()  # NOTIFY or an operator asks us to look now
        self._channel_sems: dict[uuid.UUID, asyncio.Semaphore] = {}
        # Requests on the wire never exceed `concurrency`; claimed rows may
        # (see _loop), so the next batch is ready when a slot frees up.
        self._send_slots = asyncio.Semaphore(cfg.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._warmed = False
        # Claimed rows' enqueue trace contexts, until their send starts (tracing only).
        self._trace_contexts: dict[int, dict[str, str]] = {}

    # --- public ------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the dispatcher's own database connections (after its last drain)."""
        await self._store.aclose()

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def wake(self) -> None:
        """Look for work now (called on NOTIFY; debounced by the event)."""
        self._wake.set()

    @property
    def woken(self) -> bool:
        """Whether a wake came after the last claim: work the last drain
        didn't see may be due."""
        return self._wake.is_set()

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
        completer = self._completer
        completer.start()
        heartbeat = asyncio.create_task(self._heartbeat_forever(), name="outbox-heartbeat")
        reporter = asyncio.create_task(self._report_forever(), name="outbox-reporter")
        cfg = self.config
        # Claim again once a quarter of a batch is free: big enough batches to
        # be cheap, early enough to keep the senders busy.
        refill = max(1, min(cfg.batch_size, cfg.concurrency) // 4)
        # Claim one batch ahead of the senders: without it, a send slot idles
        # through the flush, the completion and the next claim.
        row_budget = cfg.concurrency + min(cfg.batch_size, cfg.concurrency)
        try:
            if not self._warmed:
                await self._warm_credentials()
            while not stop.is_set() and time.monotonic() < deadline:
                free = row_budget - completer.outstanding
                remaining = math.inf if limit is None else limit - self.summary.claimed
                if remaining <= 0:
                    if completer.outstanding == 0:
                        break
                    await self._wait(stop, completer.progress,
                                     seconds=cfg.poll_interval_seconds)
                    continue
                if free < refill and completer.outstanding > 0 and free < remaining:
                    await self._wait(stop, completer.progress,
                                     seconds=cfg.poll_interval_seconds)
                    continue
                budget = int(min(free, remaining))
                self._wake.clear()
                flushes = completer.flushes
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
                if (completer.outstanding == 0 and not self._wake.is_set()
                        and completer.flushes == flushes):
                    break
                # Nothing claimable: wait for a completion (it may unblock a
                # chat), a NOTIFY, or the poll interval.
                await self._wait(stop, completer.progress, self._wake,
                                 seconds=cfg.poll_interval_seconds)
        finally:
            self._stopping = completer.stopping = True
            await self._finish_in_flight()
            heartbeat.cancel()
            reporter.cancel()
            for t in (heartbeat, reporter):
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await completer.stop()
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
        """Load the credentials of channels with queued rows in one read,
        before the first claim, so the first claims' sends don't wait for a
        read per new channel (and, for passphrase tokens of older versions,
        a PBKDF2 derivation each). Once per dispatcher: they stay cached."""
        try:
            ids = await self._store.channels_with_queued(limit=WARM_CHANNELS_MAX)
            await self._credentials.get_many(ids)
        except DatabaseError as exc:
            # Not fatal: claims load what they need, and handle the outage.
            log.warning("credentials_warmup_failed", error=type(exc.__cause__ or exc).__name__)
            return
        self._warmed = True
        log.debug("credentials_warmed", channels=len(ids))

    async def _claim(self, n: int) -> list[ClaimedRow] | None:
        cfg = self.config
        try:
            with tracing.span("outbox.claim", kind="consumer") as span:
                rows = await self._store.claim(batch_size=n,
                                               per_channel=cfg.per_channel_for(n),
                                               lease_seconds=cfg.lease_seconds)
                span.set_attribute("outbox.rows", len(rows))
                traced = span.is_recording()
        except DatabaseError as exc:  # back off, try again
            await self._outage.wait("claim", exc)
            return None
        self._outage.ok()
        if rows and traced:
            await self._read_trace_contexts(rows)
        if rows:
            self._completer.claimed(rows)
            self.summary.claimed += len(rows)
            log.debug("claimed", rows=len(rows), claim_token=str(rows[0].claim_token))
        return rows

    async def _read_trace_contexts(self, rows: list[ClaimedRow]) -> None:
        """While tracing: the rows' enqueue trace contexts, for their send spans' links."""
        # On an error the sends go ahead unlinked: a trace is not worth a message.
        with contextlib.suppress(DatabaseError):
            self._trace_contexts.update(await self._store.trace_contexts([r.id for r in rows]))

    # --- send ----------------------------------------------------------------

    async def _start_sends(self, rows: list[ClaimedRow]) -> None:
        contexts = ({r.id: self._trace_contexts.pop(r.id, None) for r in rows}
                    if self._trace_contexts else {})
        try:
            creds = await self._credentials.get_many({r.channel_id for r in rows})
        except DatabaseError as exc:
            # Can't read tokens now: give the rows back and retry later.
            for row in rows:
                self._completer.record(row, release())
            await self._outage.wait("credentials", exc)
            return
        for row in rows:
            task = asyncio.create_task(self._send_one(row, creds[row.channel_id],
                                                      contexts.get(row.id)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_one(self, row: ClaimedRow, creds: Credentials | Unusable,
                        trace_context: dict[str, str] | None = None) -> None:
        if isinstance(creds, Unusable):
            self._completer.record(row, Decision(
                OutboxStatus.QUEUED, Kind.RELEASED, refund_attempt=True, error=creds.reason,
                channel_action=ChannelAction.PAUSE, pause_cause=PauseCause.CREDENTIALS))
            return
        cfg = self.config
        sem = self._channel_sems.get(row.channel_id)
        if sem is None:
            sem = self._channel_sems[row.channel_id] = asyncio.Semaphore(cfg.channel_concurrency)
        async with sem, self._send_slots:
            if self._stopping or self._gate.paused(row.channel_id, time.monotonic()):
                self._completer.record(row, release())
                return
            try:
                await self._starts.started(row)
            except DatabaseError:
                # Not recorded as started: it goes back unsent (the
                # completer waits out the outage to record that).
                self._completer.record(row, release())
                return
            # The mark took a round trip: a 429 may have paused the channel since.
            if self._stopping or self._gate.paused(row.channel_id, time.monotonic()):
                self._completer.record(row, release())
                return
            requested_at = time.time()
            with (_send_span(row, trace_context) if tracing.active() else tracing.NO_SPAN) as span:
                result = await self._provider.send(
                    base_url=creds.base_url, token=creds.token,
                    message=OutgoingMessage(row.recipient, row.message_type, row.payload),
                )
                span.set_attribute("outbox.outcome", result.outcome.value)
            decision = decide(attempts=row.attempts, max_attempts=row.max_attempts,
                              result=result, policy=cfg.retry, rng=self._rng)
            if decision.channel_action is ChannelAction.RATE_LIMIT:
                decision = dataclasses.replace(decision, requested_at=requested_at)
            now = time.monotonic()
            if self._gate.observe(row.channel_id, result.outcome, now):
                self._completer.breaker_tripped(row.channel_id)
            # Stop this channel's other claimed rows right now; the flush
            # makes it a fact in the database for every worker.
            pause = local_pause_seconds(decision,
                                        rate_limit_pause_seconds=cfg.rate_limit_pause_seconds,
                                        lease_seconds=cfg.lease_seconds)
            if pause is not None:
                self._gate.pause(row.channel_id, pause, now)
        self._completer.record(row, decision)

    # --- lease, shutdown, progress --------------------------------------------------

    async def _heartbeat_forever(self) -> None:
        interval = self.config.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            tokens = self._completer.claim_tokens()
            if not tokens:
                continue
            try:
                await self._store.extend_leases(tokens, lease_seconds=self.config.lease_seconds)
            except DatabaseError as exc:
                log.warning("lease_extension_failed", error=type(exc.__cause__ or exc).__name__)

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
                         released=s.released, in_flight=self._completer.outstanding)
                last = now


def _send_span(row: ClaimedRow, trace_context: dict[str, str] | None) -> Any:
    """The send's span: its own trace, linked to the enqueue's (outbox/tracing.py)."""
    return tracing.span("outbox.send", kind="client", links=tracing.links_to(trace_context),
                        attributes={"outbox.message_id": str(row.message_id),
                                    "outbox.channel_id": str(row.channel_id),
                                    "outbox.message_type": row.message_type,
                                    "outbox.attempt": row.attempts})
