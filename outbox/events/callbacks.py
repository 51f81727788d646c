"""Status callbacks: a workspace's events posted to its endpoints, signed.

Signatures follow the Standard Webhooks specification
(https://www.standardwebhooks.com): every request carries

    webhook-id: evt_<event id>        (the same on every retry: dedupe on it)
    webhook-timestamp: <unix seconds> (of this attempt)
    webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">

keyed with the endpoint's secret (`whsec_` + base64 of 24 random bytes,
shown once when the endpoint is added). Any Standard Webhooks library
verifies them.

`CallbackSender` runs in `outbox run` (outbox/dispatch/daemon.py): it fans
new events out into deliveries (db/callback_queries.py), claims due ones
fairly across endpoints, posts them at most CALLBACK_CONCURRENCY at a time
and CALLBACK_ENDPOINT_CONCURRENCY to one endpoint (OUTBOX_CALLBACK_CONCURRENCY,
OUTBOX_CALLBACK_ENDPOINT_CONCURRENCY), and records each outcome as it comes
back: a 2xx is delivered; anything else (or no answer
within CALLBACK_TIMEOUT_SECONDS) is retried with backoff for up to
MAX_DELIVERY_AGE_SECONDS (3 days), then dead-lettered; a 410 dead-letters it
and disables the endpoint at once, and an endpoint failing for 3 days is
disabled with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from outbox import crypto
from outbox.db import callback_queries as q
from outbox.db.conninfo import DatabaseTarget
from outbox.db.direct import DirectConnection
from outbox.db.driver_sql import driver_sql
from outbox.db.states import DeliveryStatus
from outbox.dispatch.backoff import retry_delay
from outbox.errors import CryptoError, DecryptionFailed
from outbox.jsonio import dumps_unicode

if TYPE_CHECKING:  # loaded on the first delivery: a pass with none never imports it
    import aiohttp
    from sqlalchemy.ext.asyncio import AsyncEngine

    from outbox.settings import Settings

CALLBACK_INTERVAL_SECONDS = 1.0
CALLBACK_CONCURRENCY = 64  # requests in flight per process, all endpoints together
CALLBACK_ENDPOINT_CONCURRENCY = 8  # of those, to one endpoint: a slow one can't take them all
CALLBACK_TIMEOUT_SECONDS = 10.0
# A claimed row waits at most for its endpoint's requests ahead of it
# (_Run), then is posted: its lease covers two requests (at most TIMEOUT
# each) and the wait to record it, by far.
CALLBACK_LEASE_SECONDS = 120.0
CALLBACK_RUN_SECONDS = 20.0  # one pass's claiming budget; the next pass continues
# A stopping sender waits this long for the answers on the wire (then they
# wait out their lease); what it claimed and never posted goes back at once.
STOP_GRACE_SECONDS = 5.0
COMPLETE_GROUP = 32  # outcomes recorded in one statement, at most
COMPLETE_WINDOW_SECONDS = 0.02  # an outcome waits this long for others to share its statement
REFILL_SECONDS = 1.0  # a pass waiting on slow requests fans out and claims anew this often
FAN_OUT_LIMIT = 1000
# One fan-out's share of a pass: a backlog of events (the daemon was down
# while `outbox serve` kept recording) is fanned out a slice at a time, in
# turn with sending, instead of taking the whole pass.
FAN_OUT_SECONDS = 0.5
MAX_ANSWER_BYTES = 65536
RETRY_BASE_SECONDS = 5.0
RETRY_CAP_SECONDS = 3600.0
MAX_DELIVERY_AGE_SECONDS = 3 * 86400.0
DISABLE_AFTER_SECONDS = 3 * 86400.0
NO_SIGNING_KEY = ("not sent: no configured key decrypts this endpoint's signing secret "
                  "(outbox tokens check)")
SECRET_PREFIX = "whsec_"  # noqa: S105  (the format's prefix, not a secret)
SECRET_PURPOSE = "callback-secret"  # noqa: S105  (a label bound into the ciphertext)

_FAN_OUT = driver_sql(q.FAN_OUT)
_CLAIM = driver_sql(q.CLAIM_DELIVERIES)
_SECRETS = driver_sql(q.ENDPOINT_SECRETS)
_COMPLETE = driver_sql(q.COMPLETE_DELIVERIES)
_RELEASE = driver_sql(q.RELEASE_DELIVERIES)

log = structlog.get_logger(__name__)


# --- signing (pure) ------------------------------------------------------------------


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value for one request."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, event_id: int, body: bytes, *,
                   now: float | None = None) -> dict[str, str]:
    webhook_id = f"evt_{event_id}"
    timestamp = int(time.time() if now is None else now)
    return {"content-type": "application/json", "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, webhook_id, timestamp, body)}


def secret_binding(endpoint_id: uuid.UUID, url: str) -> crypto.Binding:
    """Where an endpoint's secret is stored: its ciphertext is bound to it."""
    return crypto.Binding(endpoint_id, url, purpose=SECRET_PURPOSE)


# --- outcomes (pure) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    status: DeliveryStatus  # delivered | pending (retry) | failed (dead letter)
    delay_seconds: float
    status_code: int | None
    error: str | None


def decide(status_code: int | None, error: str | None, *, attempts: int, age_seconds: float,
           delay: float | None = None) -> Outcome:
    """What becomes of a delivery after an attempt that got `status_code`
    (None: no answer, `error` says why)."""
    if status_code is not None and 200 <= status_code < 300:
        return Outcome(DeliveryStatus.DELIVERED, 0.0, status_code, None)
    reason = error or f"the receiver answered {status_code}"
    if status_code == 410:
        return Outcome(DeliveryStatus.FAILED, 0.0, status_code,
                       "the receiver answered 410 Gone: endpoint disabled")
    wait = delay if delay is not None else retry_delay(
        attempts, base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS)
    if age_seconds + wait > MAX_DELIVERY_AGE_SECONDS:
        return Outcome(DeliveryStatus.FAILED, 0.0, status_code,
                       f"{reason}; gave up after {attempts} attempts over 3 days")
    return Outcome(DeliveryStatus.PENDING, wait, status_code, reason)


# --- the sender --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    endpoint_id: uuid.UUID
    event_id: int
    body: dict[str, Any]
    attempts: int
    created_at: datetime
    claim_token: uuid.UUID


@dataclass(slots=True)
class PassSummary:
    deliveries_created: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    endpoints_disabled: int = 0


class _Run:
    """What one pass holds, per endpoint: claimed deliveries waiting for a
    slot, and requests on the wire. An endpoint has at most `per_endpoint`
    requests in flight and `hold` (twice that) claimed: a claim fetches the
    next few while the current ones are on the wire, so a slot that frees
    up is filled at once, without a round trip to the database, and a claim
    is made only when an endpoint has used up half of what it holds. A
    claimed row waits at most for its endpoint's requests ahead of it (one
    timeout, at worst): well within its lease."""

    def __init__(self, concurrency: int, per_endpoint: int) -> None:
        self.concurrency = concurrency
        self.per_endpoint = per_endpoint
        self.hold = 2 * per_endpoint
        self.in_flight: dict[asyncio.Task[Outcome], Claimed] = {}
        # Requests that have their answer, not yet taken (done): one wake-up
        # for the pass, not a wait over every task on the wire.
        self.landed = asyncio.Event()
        self._landed: list[asyncio.Task[Outcome]] = []
        self._flying: collections.Counter[uuid.UUID] = collections.Counter()
        self._waiting: dict[uuid.UUID, collections.deque[Claimed]] = {}
        # Endpoints whose last claim gave less than it had room for: nothing
        # more is due for them until the next look (look_again).
        self._exhausted: set[uuid.UUID] = set()
        self._more = True  # the last claim was full: endpoints we don't hold may have more
        self._turn = 0  # which endpoint start() serves first: each in turn
        self._look = True  # claim now, whatever we hold (the pass starts, or look_again)

    def held(self) -> dict[uuid.UUID, int]:
        ids = {e for e, n in self._flying.items() if n} | set(self._waiting)
        return {e: self._flying[e] + len(self._waiting.get(e, ())) for e in ids}

    def claim_size(self) -> int:
        return max(0, 2 * self.concurrency - sum(self.held().values()))

    def look_again(self) -> None:
        """New deliveries may be due (fanned out, or retries come due): the
        next claim looks at every endpoint."""
        self._exhausted.clear()
        self._more = self._look = True

    def worth_claiming(self) -> bool:
        if self.claim_size() <= 0:
            return False
        held = self.held()
        if self._look or not held:
            return self._more
        return any(n <= self.per_endpoint and e not in self._exhausted
                   for e, n in held.items())

    def take(self, claimed: list[Claimed]) -> None:
        before, size = self.held(), self.claim_size()
        got = collections.Counter(c.endpoint_id for c in claimed)
        for c in claimed:
            self._waiting.setdefault(c.endpoint_id, collections.deque()).append(c)
        self._more = len(claimed) >= size
        self._look = False
        for e in set(before) | set(got):
            if not self._more and got[e] < self.hold - before.get(e, 0):
                self._exhausted.add(e)
            else:
                self._exhausted.discard(e)

    def start(self, client: Callable[[], aiohttp.ClientSession],
              attempt: Callable[[aiohttp.ClientSession, Claimed], Coroutine[Any, Any, Outcome]]
              ) -> None:
        """Post what waits, an endpoint at a time in turn, while slots are free."""
        order = list(self._waiting)
        if order:  # not always the same endpoint first when slots are few
            self._turn = (self._turn + 1) % len(order)
            order = order[self._turn:] + order[:self._turn]
        started = True
        while started and len(self.in_flight) < self.concurrency:
            started = False
            for e in order:
                if e not in self._waiting:
                    continue
                queue = self._waiting[e]
                if (self._flying[e] < self.per_endpoint
                        and len(self.in_flight) < self.concurrency):
                    c = queue.popleft()
                    self._flying[e] += 1
                    task = asyncio.create_task(attempt(client(), c))
                    task.add_done_callback(self._land)
                    self.in_flight[task] = c
                    started = True
                if not queue:
                    del self._waiting[e]

    def unposted(self) -> list[Claimed]:
        """Take back every claimed row still waiting for a slot."""
        out = [c for queue in self._waiting.values() for c in queue]
        self._waiting.clear()
        return out

    def _land(self, task: asyncio.Task[Outcome]) -> None:
        self._landed.append(task)
        self.landed.set()

    def done(self) -> list[tuple[Claimed, Outcome]]:
        """The requests answered since the last call, with their outcomes."""
        out = []
        for task in self._landed:
            c = self.in_flight.pop(task)
            self._flying[c.endpoint_id] -= 1
            out.append((c, task.result()))
        self._landed.clear()
        self.landed.clear()
        return out

    async def abandon(self) -> None:
        for task in self.in_flight:
            task.remove_done_callback(self._land)
            task.cancel()
        if self.in_flight:
            await asyncio.gather(*self.in_flight, return_exceptions=True)


#: Told each outcome as it is recorded (the daemon's and the cron endpoint's
#: counters, outbox.metrics): a plain callable, so a cron pass loads no
#: metrics library.
OutcomeObserver = Callable[[Outcome], None]


class CallbackSender:
    """A maintenance-style service of `outbox run`: one pass per interval
    (outbox/maintenance/service.py's shape); concurrent senders in other
    processes share the work through SKIP LOCKED.

    A pass keeps up to `concurrency` requests in flight, at most
    `per_endpoint` of them to one endpoint, with as many more claimed
    behind them (`_Run`); it records outcomes in small groups as they come
    back, and claims again as an endpoint runs low. A slow endpoint holds
    its own `per_endpoint` slots; the others keep flowing past it."""

    name = "callbacks"
    interval_seconds = CALLBACK_INTERVAL_SECONDS
    first_run_after_seconds = 1.0
    lock_key = 0  # no advisory lock: claims are SKIP LOCKED

    def __init__(self, *, keys: Sequence[str], concurrency: int = CALLBACK_CONCURRENCY,
                 per_endpoint: int = CALLBACK_ENDPOINT_CONCURRENCY,
                 timeout_seconds: float = CALLBACK_TIMEOUT_SECONDS,
                 run_seconds: float = CALLBACK_RUN_SECONDS,
                 retry_delay_seconds: float | None = None,
                 observer: OutcomeObserver | None = None) -> None:
        self._keys = list(keys)
        self._concurrency = concurrency
        self._per_endpoint = min(per_endpoint, concurrency)
        self._timeout = timeout_seconds
        self._run_seconds = run_seconds
        self._retry_delay = retry_delay_seconds  # tests: a fixed wait instead of backoff
        self._observer = observer
        self._db: DirectConnection | None = None
        self._client: aiohttp.ClientSession | None = None
        self._secrets: dict[uuid.UUID, tuple[str, str]] = {}  # id -> (url, secret)
        self._unreadable: set[uuid.UUID] = set()  # endpoints whose secret no key decrypts (logged)
        self._stopping = False
        self._run: _Run | None = None  # the pass's, while it posts

    def request_stop(self) -> None:
        """The process is stopping: a pass under way claims and posts no
        more, hands back what it claimed and never posted, records the
        answers that come within STOP_GRACE_SECONDS, and ends."""
        self._stopping = True
        if self._run is not None:
            self._run.landed.set()  # a pass waiting for answers looks at once

    @classmethod
    def from_settings(cls, settings: Settings, *, run_seconds: float = CALLBACK_RUN_SECONDS,
                      observer: OutcomeObserver | None = None) -> CallbackSender:
        """The sender the settings describe: the daemon's, and a cron pass's."""
        return cls(keys=settings.decryption_keys(), concurrency=settings.callback_concurrency,
                   per_endpoint=settings.callback_endpoint_concurrency,
                   run_seconds=run_seconds, observer=observer)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._db is not None:
            await self._db.aclose()

    async def run_once(self, database: DirectConnection | DatabaseTarget | AsyncEngine
                       ) -> PassSummary:
        """One pass: fan new events out to the endpoints, then post what is
        due until nothing is (or the pass's budget is spent). On `database`
        if it is a connection (one the caller keeps), else on a
        connection of this sender's own."""
        if isinstance(database, DirectConnection):
            db = database
        else:
            db = self._db = self._db or DirectConnection.to(
                database, application_name="outbox-callbacks")
        summary = PassSummary()
        deadline = time.monotonic() + self._run_seconds
        await self._fan_out(db, summary, deadline)
        await self._send_due(db, summary, deadline)
        if summary.delivered or summary.retried or summary.failed:
            log.info("callbacks_sent", delivered=summary.delivered, retried=summary.retried,
                     failed=summary.failed, endpoints_disabled=summary.endpoints_disabled)
        return summary

    async def _fan_out(self, db: DirectConnection, summary: PassSummary,
                       deadline: float) -> None:
        deadline = min(deadline, time.monotonic() + FAN_OUT_SECONDS)
        while not self._stopping:  # a batch at least, then while the slice lasts
            row = await db.fetchone(_FAN_OUT, {"limit": FAN_OUT_LIMIT})
            assert row is not None
            summary.deliveries_created += int(row[2])
            if not (row[0] and int(row[1]) >= FAN_OUT_LIMIT) or time.monotonic() >= deadline:
                break

    async def _send_due(self, db: DirectConnection, summary: PassSummary,
                        deadline: float) -> None:
        run = self._run = _Run(self._concurrency, self._per_endpoint)
        finished: list[tuple[Claimed, Outcome]] = []
        first_finished = 0.0  # when the oldest outcome not yet recorded came back
        refill_at = time.monotonic() + REFILL_SECONDS
        stop_by: float | None = None  # stopping: when to give up on the answers on the wire
        try:
            while True:
                now = time.monotonic()
                if self._stopping and stop_by is None:
                    stop_by, deadline = now + STOP_GRACE_SECONDS, min(deadline, now)
                    await self._release(db, run.unposted())
                if stop_by is not None and now >= stop_by:
                    finished.extend(run.done())  # answers that came as the grace ran out
                    if finished:
                        await self._complete(db, finished, summary)
                    return  # what is still on the wire waits out its lease
                if now >= refill_at and now < deadline:
                    # Waiting on slow requests: new events meanwhile are work too.
                    refill_at = now + REFILL_SECONDS
                    await self._fan_out(db, summary, deadline)
                    run.look_again()
                    now = time.monotonic()
                if now < deadline and not self._stopping and run.worth_claiming():
                    claimed = await self._claim(db, run)
                    await self._load_secrets(db, {c.endpoint_id for c in claimed})
                    run.take(claimed)
                if self._stopping and stop_by is None:
                    continue  # it came during the claim: the top hands those back
                run.start(self._http, self._attempt)
                if not run.in_flight and not finished:
                    return
                if run.in_flight:
                    now = time.monotonic()
                    wait: float | None = None  # past the deadline: only answers to wait for
                    if finished:
                        wait = max(0.0, first_finished + COMPLETE_WINDOW_SECONDS - now)
                    elif now < deadline:
                        wait = max(0.0, min(refill_at, deadline) - now)
                    if stop_by is not None:
                        left = max(0.0, stop_by - now)
                        wait = left if wait is None else min(wait, left)
                    with contextlib.suppress(TimeoutError):  # not wait_for: see hub.py
                        async with asyncio.timeout(wait):
                            await run.landed.wait()
                    done = run.done()
                    if done and not finished:
                        first_finished = time.monotonic()
                    finished.extend(done)
                    if not self._stopping:
                        run.start(self._http, self._attempt)  # their slots, at once
                if finished and (not run.in_flight or len(finished) >= COMPLETE_GROUP
                                 or time.monotonic() - first_finished
                                 >= COMPLETE_WINDOW_SECONDS):
                    await self._complete(db, finished, summary)
                    finished = []
        finally:
            # Cancelled, or stopping past its grace: requests on the wire
            # are abandoned; their rows (and, if cancelled, the claimed ones
            # not yet posted) stay `delivering` until the lease runs out and
            # are posted again, with the same webhook-id.
            self._run = None
            await run.abandon()

    async def _release(self, db: DirectConnection, claimed: list[Claimed]) -> None:
        if claimed:
            await db.execute(_RELEASE, {"ids": [c.id for c in claimed],
                                        "claim_tokens": [c.claim_token for c in claimed]})
            log.info("callbacks_released", deliveries=len(claimed))

    async def _claim(self, db: DirectConnection, run: _Run) -> list[Claimed]:
        held = run.held()
        token = uuid.uuid4()
        rows = await db.fetchall(_CLAIM, {
            "per_endpoint": run.hold, "batch_size": run.claim_size(),
            "busy_endpoints": list(held), "busy_counts": list(held.values()),
            "claim_token": token, "lease_seconds": CALLBACK_LEASE_SECONDS})
        return [Claimed(int(r[0]), r[1], int(r[2]), r[3], int(r[4]), r[5], token)
                for r in rows]

    def _http(self) -> aiohttp.ClientSession:
        import aiohttp

        # aiohttp, not httpx's own pool: that one slows down sharply with
        # many requests in flight (providers/whapi.py has the measurements).
        self._client = self._client or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        return self._client

    async def _attempt(self, client: aiohttp.ClientSession, c: Claimed) -> Outcome:
        import aiohttp

        age = (datetime.now(c.created_at.tzinfo) - c.created_at).total_seconds()
        if c.endpoint_id not in self._secrets:  # unreadable (or the endpoint just removed)
            return decide(None, NO_SIGNING_KEY, attempts=c.attempts, age_seconds=age,
                          delay=self._retry_delay)
        url, secret = self._secrets[c.endpoint_id]
        body = dumps_unicode(c.body).encode()
        code: int | None = None
        error: str | None = None
        try:
            async with client.post(url, data=body, allow_redirects=False,
                                   headers=signed_headers(secret, c.event_id, body)) as r:
                code = r.status
                # A short answer read whole: its connection is reused; a
                # long one is not kept (the connection is closed).
                await r.content.read(MAX_ANSWER_BYTES)
        except TimeoutError:
            error = f"no answer within {self._timeout:g} s"
        except aiohttp.ClientError as exc:
            error = f"request failed: {type(exc).__name__}"
        return decide(code, error, attempts=c.attempts, age_seconds=age, delay=self._retry_delay)

    async def _complete(self, db: DirectConnection, finished: list[tuple[Claimed, Outcome]],
                        summary: PassSummary) -> None:
        row = await db.fetchone(_COMPLETE, {
            "ids": [c.id for c, _ in finished],
            "claim_tokens": [c.claim_token for c, _ in finished],
            "statuses": [o.status for _, o in finished],
            "delays": [float(o.delay_seconds) for _, o in finished],
            "status_codes": [o.status_code for _, o in finished],
            "errors": [o.error for _, o in finished],
            "disable_after_seconds": DISABLE_AFTER_SECONDS})
        assert row is not None
        # Only the rows still ours count: one whose lease ran out and that
        # another sender claimed is that sender's to count.
        completed = set(row[0])
        for c, o in finished:
            if c.id not in completed:
                continue
            if o.status == DeliveryStatus.DELIVERED:
                summary.delivered += 1
            elif o.status == DeliveryStatus.PENDING:
                summary.retried += 1
            else:
                summary.failed += 1
            if self._observer is not None:
                self._observer(o)
        for endpoint_id in row[1]:
            summary.endpoints_disabled += 1
            log.warning("callback_endpoint_disabled", endpoint_id=str(endpoint_id))
        if row[2] and self._run is not None:
            self._run.look_again()  # back to their full share: claim for them now

    async def _load_secrets(self, db: DirectConnection, ids: set[uuid.UUID]) -> None:
        """The signing secrets of the endpoints claimed for. One no configured
        key decrypts is left out (its deliveries fail their attempt, say why,
        and back off): the other endpoints' deliveries still go."""
        missing = [i for i in ids if i not in self._secrets]
        if not missing:
            return
        for r in await db.fetchall(_SECRETS, {"endpoint_ids": missing}):
            try:
                self._secrets[r[0]] = (r[1], decrypt_secret(r[0], r[1], r[2], self._keys))
            except CryptoError:  # a wrong key, or a blob mangled by hand
                if r[0] not in self._unreadable:
                    self._unreadable.add(r[0])
                    log.error("callback_secret_unreadable", endpoint_id=str(r[0]),
                              fix="configure the key it was written with "
                                  "(OUTBOX_ENCRYPTION_KEY_OLD) and run outbox tokens rotate-key")


async def send_callbacks_once(database: DatabaseTarget | AsyncEngine,
                              sender: CallbackSender) -> PassSummary:
    """One pass of `sender`, then its connections closed: for deployments
    that drain from cron (`dispatch --once`, POST /v1/cron/dispatch) instead
    of running `outbox run`."""
    try:
        return await sender.run_once(database)
    finally:
        await sender.aclose()


def decrypt_secret(endpoint_id: uuid.UUID, url: str, blob: str, keys: Sequence[str]) -> str:
    """The endpoint's signing secret, with whichever configured key wrote it."""
    last: Exception | None = None
    for key in keys:
        try:
            return crypto.decrypt_token(blob, key, secret_binding(endpoint_id, url))
        except DecryptionFailed as exc:
            last = exc
    assert last is not None
    raise last
