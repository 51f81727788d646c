"""The real Whapi.cloud client (implements `providers.base.Provider`).

One `WhapiClient` per process, shared by every channel: the base URL and
the token are per call (`https://gate.whapi.cloud` by default, a channel's
`base_url` override, e.g. the simulator's URL, otherwise).

    client = WhapiClient(timeout=10.0, max_in_flight=256)
    result = await client.send(base_url=url, token=token, message=msg)
    ...
    await client.aclose()

`send` never raises for network or provider problems: it returns a
`SendResult` classified by `providers.classify` (see the table there and in
shared/WHAPI.md). It retries in-process only when the request provably never
left (connect errors, connect timeouts, no pooled connection in time), a few
quick attempts with tenacity; never after a timeout or read error, because
Whapi has no idempotency key and a retry could send the message twice.

Tokens never appear in logs, reprs or `SendResult.error`; message bodies are
never logged.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final
from urllib.parse import quote

import aiohttp
import httpx
import structlog

from outbox.providers.base import MESSAGE_TYPES, Outcome, OutgoingMessage, Provider, SendResult
from outbox.providers.classify import (
    classify_exception,
    classify_read_receipt,
    classify_response,
    is_connect_failure,
    root_transport_error,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "ENDPOINTS",
    "READ_RECEIPT",
    "WhapiClient",
]

if TYPE_CHECKING:
    from tenacity import AsyncRetrying, RetryCallState

log = structlog.get_logger(__name__)
_stdlib_log = logging.getLogger(__name__)  # the logger structlog's calls end in

DEFAULT_BASE_URL: Final = "https://gate.whapi.cloud"
#: Explicit per phase. `read` is generous: Whapi answers once WhatsApp took
#: the message. `pool` bounds the wait for a free pooled connection.
DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=30.0, write=10.0, pool=5.0)
#: Idle keep-alive connections are dropped after this many seconds: below
#: the usual server idle timeouts (Node 5 s, nginx 75 s, ALB 60 s), so we
#: rarely POST on a connection the server is closing (a read error that
#: leaves the send ambiguous).
DEFAULT_KEEPALIVE_EXPIRY: Final = 4.0
DEFAULT_USER_AGENT: Final = "whapi-outbox/0.1"

ENDPOINTS: Final[Mapping[str, str]] = {kind: f"/messages/{kind}" for kind in MESSAGE_TYPES}
#: The outbox's kind for a read receipt (payload `{"message_id": <WhatsApp
#: id>}`): Whapi's `PUT /messages/{MessageID}`, not a message of its own.
READ_RECEIPT: Final = "read"
# One encoder, made once: json.dumps with options builds one per call
# (0.7 us more per request).
_encode_json: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class WhapiClient:
    """Async Whapi client on aiohttp, configured in httpx's terms.

    aiohttp carries the requests itself (see `_request`): httpx's own pool
    rescans every pooled connection per request and collapses with many
    requests in flight (encode/httpx#3215). The measurements behind that
    choice: docs/performance.md, "The client's transport".

    Options (keyword-only):
      timeout          float (all phases) or httpx.Timeout(connect, read, write, pool)
      max_in_flight    bound on concurrent requests through this client (and
                       the connection-pool size); extra sends wait their turn
      keepalive_expiry seconds an idle connection is kept
      connect_attempts total attempts when the connection can't be made
                       (1 = no in-process retry)
      connect_retry_wait  base of the exponential wait between those attempts
      user_agent       User-Agent header
    """

    def __init__(
        self,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        max_in_flight: int = 256,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
        connect_attempts: int = 3,
        connect_retry_wait: float = 0.05,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        if connect_attempts < 1:
            raise ValueError("connect_attempts must be at least 1")
        self._timeout = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        self._max_in_flight = max_in_flight
        self._keepalive_expiry = keepalive_expiry
        self._connect_attempts = connect_attempts
        self._connect_retry_wait = connect_retry_wait
        self._semaphore = asyncio.Semaphore(max_in_flight)
        self._ssl = httpx.create_ssl_context()
        # httpx's timeouts, applied as httpx-aiohttp applied them: connect
        # and read per socket operation, pool as aiohttp's connection wait;
        # `total` is a backstop over one attempt (aiohttp has no write
        # timeout). One object, shared by every request.
        t = self._timeout
        self._client_timeout = aiohttp.ClientTimeout(
            total=_attempt_deadline(t), sock_connect=t.connect, sock_read=t.read, connect=t.pool)
        self._session: aiohttp.ClientSession | None = None
        self._user_agent = user_agent
        # The request headers, one dict per token and body kind, made once.
        self._headers: dict[tuple[str, bool], dict[str, str]] = {}
        self._closed = False

    def _new_session(self) -> aiohttp.ClientSession:
        # Made on the first request, inside the running event loop.
        connector = aiohttp.TCPConnector(
            limit=self._max_in_flight,
            keepalive_timeout=self._keepalive_expiry,
            ssl=self._ssl,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # One session serves every channel: never keep or replay cookies
            # (a load balancer's sticky cookie would tie channels together).
            cookie_jar=aiohttp.DummyCookieJar(),
            # No HTTP(S)_PROXY from the environment: loopback and Whapi are
            # reached directly, as configured.
            trust_env=False,
        )
        return self._session

    def __repr__(self) -> str:
        t = self._timeout
        return (
            f"WhapiClient(timeout=(connect={t.connect}, read={t.read}, write={t.write}, "
            f"pool={t.pool}), max_in_flight={self._max_in_flight}, "
            f"keepalive_expiry={self._keepalive_expiry})"
        )

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if self._session is not None:
                await self._session.close()

    async def __aenter__(self) -> WhapiClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def send(self, *, base_url: str, token: str, message: OutgoingMessage) -> SendResult:
        """Send one message; every outcome is a classified `SendResult`.

        `result.extra["attempts"]` says how many HTTP attempts were made
        (more than 1 only after connect failures). Raises RuntimeError
        only when called after `aclose()` (a programming error).
        """
        if self._closed:
            raise RuntimeError("WhapiClient.send() called after aclose()")
        read_target: str | None = None
        if message.message_type == READ_RECEIPT:
            target = message.payload.get("message_id")
            if not isinstance(target, str) or not target:
                return self._done(
                    message,
                    SendResult(outcome=Outcome.PERMANENT,
                               error="read receipt without a message id"),
                    attempts=0,
                    started=time.monotonic(),
                )
            read_target = target
            # No body: Whapi's markMessageAsRead takes the id in the path.
            method, content = "PUT", None
            url = base_url.rstrip("/") + "/messages/" + quote(target, safe="")
        else:
            path = ENDPOINTS.get(message.message_type)
            if path is None:
                return self._done(
                    message,
                    SendResult(
                        outcome=Outcome.PERMANENT,
                        error=f"unsupported message type {message.message_type[:40]!r}",
                    ),
                    attempts=0,
                    started=time.monotonic(),
                )
            body = {"to": message.to,
                    **{k: v for k, v in message.payload.items() if k != "to"}}
            try:
                content = _encode_json(body).encode()
            except (TypeError, ValueError):
                return self._done(
                    message,
                    SendResult(outcome=Outcome.PERMANENT,
                               error="payload is not JSON-serialisable"),
                    attempts=0,
                    started=time.monotonic(),
                )
            method, url = "POST", _url(base_url, path)
        headers = self._headers.get((token, content is not None))
        if headers is None:
            headers = self._request_headers(token, with_body=content is not None)

        started = time.monotonic()
        attempts = 1
        result: SendResult
        async with self._semaphore:
            try:
                try:
                    response = await self._request(method, url, content, headers)
                except Exception as exc:
                    # Slow path, only when the connection could not be made:
                    # the request never reached the server, so repeating it
                    # can't send twice. Anything else ends the retries.
                    if self._connect_attempts == 1 or not is_connect_failure(exc):
                        raise
                    _log_retry_attempt(1, exc)
                    wait = self._connect_retry_wait
                    await asyncio.sleep(wait + random.uniform(0, wait))
                    async for attempt in self._retrying():
                        with attempt:
                            attempts = 1 + attempt.retry_state.attempt_number
                            response = await self._request(method, url, content, headers)
            except Exception as exc:  # classified, never raised: see module doc
                result = classify_exception(exc)
            else:
                status, answer, response_headers = response
                if read_target is not None:
                    result = classify_read_receipt(status, answer, response_headers,
                                                   wa_message_id=read_target)
                else:
                    result = classify_response(status, answer, response_headers,
                                               endpoint=message.message_type)
        return self._done(message, result, attempts=attempts, started=started)

    def _retrying(self) -> AsyncRetrying:
        """Attempts 2..connect_attempts (tenacity), after a connect failure."""
        # Loaded here, on the rare path: most processes never retry a connect.
        from tenacity import (
            AsyncRetrying,
            retry_if_exception,
            stop_after_attempt,
            wait_exponential,
            wait_random,
        )

        wait = self._connect_retry_wait
        return AsyncRetrying(
            retry=retry_if_exception(is_connect_failure),
            stop=stop_after_attempt(self._connect_attempts - 1),
            wait=wait_exponential(multiplier=2 * wait, max=max(wait, 1.0)) + wait_random(0, wait),
            before_sleep=_log_retry,
            reraise=True,
        )

    def _request_headers(self, token: str, *, with_body: bool) -> dict[str, str]:
        if len(self._headers) >= _MAX_HEADER_SETS:  # tokens rotated many times over
            self._headers.clear()
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        if with_body:
            headers["Content-Type"] = "application/json"
        self._headers[(token, with_body)] = headers
        return headers

    async def _request(self, method: str, url: str, content: bytes | None,
                       headers: dict[str, str]) -> tuple[int, bytes, Mapping[str, str]]:
        """One HTTP exchange on aiohttp: status, body, headers.

        aiohttp directly, by measurement: httpx's request and response
        objects and the httpx-aiohttp adapter between them and aiohttp cost
        as much CPU per request as aiohttp itself (our client at 64 in
        flight did 0.45 of raw aiohttp's rate against the same server,
        scripts/bench --only peers). httpx stays the configuration's
        vocabulary (httpx.Timeout, its SSL context). Redirects stay
        unfollowed: a 3xx is classified like any unexpected answer.
        aiohttp's exceptions reach providers.classify as they are (it
        judges by them when there is one)."""
        session = self._session or self._new_session()
        async with session.request(method, url, data=content, headers=headers,
                                   allow_redirects=False, timeout=self._client_timeout) as r:
            return r.status, await r.read(), r.headers

    def _done(
        self, message: OutgoingMessage, result: SendResult, *, attempts: int, started: float
    ) -> SendResult:
        result = dataclasses.replace(result, extra={**result.extra, "attempts": attempts})
        elapsed_ms = round((time.monotonic() - started) * 1000, 1)
        if result.outcome is Outcome.SENT:
            # structlog builds a logger and runs its level filter per call
            # (its loggers are not cached, see outbox/logging.py); the
            # standard library answers from a cache. Once per send: it shows.
            if not _stdlib_log.isEnabledFor(logging.DEBUG):
                return result
            log.debug(
                "whapi.sent",
                wa_message_id=result.wa_message_id,
                status_code=result.status_code,
                message_type=message.message_type,
                attempts=attempts,
                elapsed_ms=elapsed_ms,
            )
        else:
            log.warning(
                "whapi.send_failed",
                outcome=str(result.outcome),
                status_code=result.status_code,
                channel_problem=str(result.channel_problem) if result.channel_problem else None,
                retry_after=result.retry_after,
                ambiguous=result.ambiguous,
                error=result.error,
                message_type=message.message_type,
                attempts=attempts,
                elapsed_ms=elapsed_ms,
            )
        return result


_MAX_HEADER_SETS: Final = 4096


@functools.lru_cache(maxsize=1024)
def _url(base_url: str, path: str) -> str:
    # A few distinct URLs (channels' base URLs x message types), joined once.
    return base_url.rstrip("/") + path


def _attempt_deadline(timeout: httpx.Timeout) -> float | None:
    """A backstop over one attempt: aiohttp does not enforce `write`."""
    parts = (timeout.connect, timeout.read, timeout.write, timeout.pool)
    if any(p is None for p in parts):
        return None
    return sum(p for p in parts if p is not None) + 1.0


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    _log_retry_attempt(1 + state.attempt_number, exc)


def _log_retry_attempt(failed_attempt: int, exc: BaseException | None) -> None:
    log.info(
        "whapi.connect_retry",
        failed_attempt=failed_attempt,
        error_type=type(root_transport_error(exc)).__name__ if exc is not None else None,
    )


def _conforms(client: WhapiClient) -> Provider:
    """Never called: makes mypy check that WhapiClient satisfies Provider."""
    return client
