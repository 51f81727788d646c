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
fairly across endpoints, posts them at most CALLBACK_CONCURRENCY at a time,
and records each outcome: a 2xx is delivered; anything else (or no answer
within CALLBACK_TIMEOUT_SECONDS) is retried with backoff for up to
MAX_DELIVERY_AGE_SECONDS (3 days), then dead-lettered; a 410 dead-letters it
and disables the endpoint at once, and an endpoint failing for 3 days is
disabled with the reason.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Sequence
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
from outbox.errors import DecryptionFailed
from outbox.jsonio import dumps_unicode

if TYPE_CHECKING:  # loaded on the first delivery: a pass with none never imports it
    import aiohttp
    from sqlalchemy.ext.asyncio import AsyncEngine

CALLBACK_INTERVAL_SECONDS = 1.0
CALLBACK_CONCURRENCY = 64  # requests in flight per process, all endpoints together
CALLBACK_TIMEOUT_SECONDS = 10.0
CALLBACK_BATCH = 256
CALLBACK_PER_ENDPOINT = 128  # of a batch: one slow endpoint can't take all of it
CALLBACK_LEASE_SECONDS = 120.0  # > a batch's worst case: BATCH / CONCURRENCY * TIMEOUT
CALLBACK_RUN_SECONDS = 20.0  # one pass's budget; the next pass continues
FAN_OUT_LIMIT = 1000
MAX_ANSWER_BYTES = 65536
RETRY_BASE_SECONDS = 5.0
RETRY_CAP_SECONDS = 3600.0
MAX_DELIVERY_AGE_SECONDS = 3 * 86400.0
DISABLE_AFTER_SECONDS = 3 * 86400.0
SECRET_PREFIX = "whsec_"  # noqa: S105  (the format's prefix, not a secret)
SECRET_PURPOSE = "callback-secret"  # noqa: S105  (a label bound into the ciphertext)

_FAN_OUT = driver_sql(q.FAN_OUT)
_CLAIM = driver_sql(q.CLAIM_DELIVERIES)
_SECRETS = driver_sql(q.ENDPOINT_SECRETS)
_COMPLETE = driver_sql(q.COMPLETE_DELIVERIES)

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


@dataclass(slots=True)
class PassSummary:
    deliveries_created: int = 0
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    endpoints_disabled: int = 0


class CallbackSender:
    """A maintenance-style service of `outbox run`: one pass per interval
    (outbox/maintenance/service.py's shape); concurrent senders in other
    processes share the work through SKIP LOCKED."""

    name = "callbacks"
    interval_seconds = CALLBACK_INTERVAL_SECONDS
    first_run_after_seconds = 1.0
    lock_key = 0  # no advisory lock: claims are SKIP LOCKED

    def __init__(self, *, keys: Sequence[str], concurrency: int = CALLBACK_CONCURRENCY,
                 timeout_seconds: float = CALLBACK_TIMEOUT_SECONDS,
                 run_seconds: float = CALLBACK_RUN_SECONDS,
                 retry_delay_seconds: float | None = None) -> None:
        self._keys = list(keys)
        self._concurrency = concurrency
        self._timeout = timeout_seconds
        self._run_seconds = run_seconds
        self._retry_delay = retry_delay_seconds  # tests: a fixed wait instead of backoff
        self._db: DirectConnection | None = None
        self._client: aiohttp.ClientSession | None = None
        self._secrets: dict[uuid.UUID, tuple[str, str]] = {}  # id -> (url, secret)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
        if self._db is not None:
            await self._db.aclose()

    async def run_once(self, database: DirectConnection | DatabaseTarget | AsyncEngine
                       ) -> PassSummary:
        """One pass: fan new events out to the endpoints, then post what is
        due. On `database` if it is a connection (the daemon's maintenance
        one), else on a connection of this sender's own."""
        if isinstance(database, DirectConnection):
            db = database
        else:
            db = self._db = self._db or DirectConnection.to(
                database, application_name="outbox-callbacks")
        summary = PassSummary()
        deadline = time.monotonic() + self._run_seconds
        while time.monotonic() < deadline:
            row = await db.fetchone(_FAN_OUT, {"limit": FAN_OUT_LIMIT})
            assert row is not None
            summary.deliveries_created += int(row[2])
            if not (row[0] and int(row[1]) >= FAN_OUT_LIMIT):
                break
        while time.monotonic() < deadline:
            claimed = await self._claim(db)
            if not claimed:
                break
            await self._deliver(db, claimed, summary)
        if summary.delivered or summary.retried or summary.failed:
            log.info("callbacks_sent", delivered=summary.delivered, retried=summary.retried,
                     failed=summary.failed, endpoints_disabled=summary.endpoints_disabled)
        return summary

    async def _claim(self, db: DirectConnection) -> list[Claimed]:
        rows = await db.fetchall(_CLAIM, {
            "per_endpoint": CALLBACK_PER_ENDPOINT, "batch_size": CALLBACK_BATCH,
            "claim_token": (token := uuid.uuid4()), "lease_seconds": CALLBACK_LEASE_SECONDS})
        self._token = token
        return [Claimed(int(r[0]), r[1], int(r[2]), r[3], int(r[4]), r[5]) for r in rows]

    async def _deliver(self, db: DirectConnection, claimed: list[Claimed],
                       summary: PassSummary) -> None:
        import aiohttp

        await self._load_secrets(db, {c.endpoint_id for c in claimed})
        # aiohttp, not httpx's own pool: that one slows down sharply with
        # many requests in flight (providers/whapi.py has the measurements).
        client = self._client = self._client or aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._concurrency),
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        slots = asyncio.Semaphore(self._concurrency)
        now = datetime.now(claimed[0].created_at.tzinfo)

        async def attempt(c: Claimed) -> Outcome:
            url, secret = self._secrets[c.endpoint_id]
            body = dumps_unicode(c.body).encode()
            code: int | None = None
            error: str | None = None
            async with slots:
                try:
                    async with client.post(url, data=body, allow_redirects=False,
                                           headers=signed_headers(secret, c.event_id, body)
                                           ) as r:
                        code = r.status
                        # A short answer read whole: its connection is reused;
                        # a long one is not kept (the connection is closed).
                        await r.content.read(MAX_ANSWER_BYTES)
                except TimeoutError:
                    error = f"no answer within {self._timeout:g} s"
                except aiohttp.ClientError as exc:
                    error = f"request failed: {type(exc).__name__}"
            return decide(code, error, attempts=c.attempts,
                          age_seconds=(now - c.created_at).total_seconds(),
                          delay=self._retry_delay)

        outcomes = await asyncio.gather(*(attempt(c) for c in claimed))
        row = await db.fetchone(_COMPLETE, {
            "ids": [c.id for c in claimed], "claim_tokens": [self._token] * len(claimed),
            "statuses": [o.status for o in outcomes],
            "delays": [o.delay_seconds for o in outcomes],
            "status_codes": [o.status_code for o in outcomes],
            "errors": [o.error for o in outcomes],
            "disable_after_seconds": DISABLE_AFTER_SECONDS})
        assert row is not None
        for o in outcomes:
            if o.status == DeliveryStatus.DELIVERED:
                summary.delivered += 1
            elif o.status == DeliveryStatus.PENDING:
                summary.retried += 1
            else:
                summary.failed += 1
        for endpoint_id in row[1]:
            summary.endpoints_disabled += 1
            log.warning("callback_endpoint_disabled", endpoint_id=str(endpoint_id))

    async def _load_secrets(self, db: DirectConnection, ids: set[uuid.UUID]) -> None:
        missing = [i for i in ids if i not in self._secrets]
        if not missing:
            return
        for r in await db.fetchall(_SECRETS, {"endpoint_ids": missing}):
            self._secrets[r[0]] = (r[1], decrypt_secret(r[0], r[1], r[2], self._keys))


async def send_callbacks_once(database: DatabaseTarget | AsyncEngine, *, keys: Sequence[str],
                              max_seconds: float = CALLBACK_RUN_SECONDS) -> PassSummary:
    """One callback pass, for deployments that drain from cron (`dispatch
    --once`, POST /v1/cron/dispatch) instead of running `outbox run`."""
    sender = CallbackSender(keys=keys, run_seconds=max_seconds)
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
