"""Whapi's answers -> `SendResult`: pure functions, no I/O.

The table (shared/WHAPI.md):

    2xx, "sent": true, message.id    SENT(wa_message_id)
    2xx without a usable id          TRANSIENT, ambiguous   (*)
    2xx with "sent": false           TRANSIENT, ambiguous   (*)
    400, 403, 413, 415               PERMANENT
    401                              CHANNEL_PROBLEM(UNAUTHORIZED)   pause channel
    402                              CHANNEL_PROBLEM(TRIAL_LIMIT)    pause channel
    404 on a media endpoint          PERMANENT ("media with the specified id not found")
    404 anywhere else                CHANNEL_PROBLEM(NOT_FOUND)      pause channel (**)
    429                              RATE_LIMITED, retry_after from Retry-After
    5xx and anything else            TRANSIENT

(*) A 2xx without an id means Whapi probably accepted the message but we
can't track it. It is not SENT (the row would have no wa_message_id to match
status webhooks with) and not PERMANENT (the message is fine): TRANSIENT,
flagged ambiguous because a retry may deliver it twice. `sent` is required in
the spec's send response: `"sent": false` is Whapi saying it did not send,
but it may still hold a message id, so it is ambiguous too.

(**) The spec documents 404 only on media endpoints, where it is about that
message's media. Elsewhere it is undocumented: the likeliest cause is a
channel whose base URL or token points at nothing, so the channel pauses
(its rows keep their attempts) until a human looks; it is never disabled on
a guess.

Exceptions: failures that provably happened before the request left
(connect refused/unreachable, DNS, TLS handshake, connect timeout, waiting
for a pooled connection) are TRANSIENT and not ambiguous, and
`is_connect_failure` says they are safe to retry in-process. Everything
after the request may have left (read/write timeout, read error, the server
dropping a keep-alive connection, a garbled response) is TRANSIENT and
ambiguous: Whapi may have sent the message.

Error strings are short and never contain the token or the message body:
"HTTP 400: <provider message, at most 200 chars>" or a fixed phrase plus
the exception's class name.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any, Final

import aiohttp
import httpx

from outbox.providers.base import ChannelProblem, Outcome, SendResult

__all__ = [
    "MAX_REASON_CHARS",
    "MEDIA_ENDPOINTS",
    "classify_exception",
    "classify_read_receipt",
    "classify_response",
    "is_connect_failure",
    "parse_retry_after",
    "root_transport_error",
]

MAX_REASON_CHARS: Final = 200

PERMANENT_STATUSES: Final = frozenset({400, 403, 413, 415})
CHANNEL_STATUSES: Final[Mapping[int, ChannelProblem]] = {
    401: ChannelProblem.UNAUTHORIZED,
    402: ChannelProblem.TRIAL_LIMIT,
    404: ChannelProblem.NOT_FOUND,
}
#: Endpoints (message types) whose 404 means "media with the specified id
#: not found" in the spec: that message fails, the channel is fine.
MEDIA_ENDPOINTS: Final = frozenset(
    {"image", "video", "gif", "short", "document", "audio", "voice", "sticker"})


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive lookup that works for plain dicts and httpx.Headers."""
    value = headers.get(name)
    if value is not None:
        return value
    lname = name.lower()
    for key, val in headers.items():
        if key.lower() == lname:
            return val
    return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date.

    Absent, empty, negative, non-finite or unparsable -> None. A date in
    the past -> 0.0. `now` (unix time) is for tests; default: time.time().
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": HTTP dates are always UTC
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _clean(text: str) -> str:
    text = " ".join(text.split())  # newlines, tabs, runs of spaces
    if len(text) > MAX_REASON_CHARS:
        text = text[: MAX_REASON_CHARS - 1] + "…"
    return text


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None (not JSON, or not an object)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _provider_reason(body: bytes) -> str | None:
    """Whapi's `error.message` (+ `details`) from an error body, if any."""
    data = _json_object(body)
    if data is None:
        return None
    err = data.get("error")
    if isinstance(err, dict):
        message = err.get("message")
        details = err.get("details")
        parts = [p for p in (message, details) if isinstance(p, str) and p.strip()]
        if parts:
            return ": ".join(parts)
    elif isinstance(err, str) and err.strip():
        return err
    message = data.get("message")
    if isinstance(message, str) and message.strip():
        return message
    return None


def _message_id(data: Mapping[str, Any] | None) -> str | None:
    if data is None:
        return None
    message = data.get("message")
    if not isinstance(message, dict):
        return None
    mid = message.get("id")
    if isinstance(mid, bool):
        return None
    if isinstance(mid, int):
        return str(mid)
    if isinstance(mid, str) and mid.strip():
        return mid.strip()
    return None


def _error_text(status_code: int, body: bytes) -> str:
    reason = _provider_reason(body)
    return f"HTTP {status_code}: {_clean(reason)}" if reason else f"HTTP {status_code}"


def classify_response(
    status_code: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    endpoint: str = "text",
    now: float | None = None,
) -> SendResult:
    """Classify one HTTP answer from Whapi's `POST /messages/<endpoint>`
    (see module doc)."""
    if 200 <= status_code < 300:
        data = _json_object(body)
        if data is not None and data.get("sent") is False:
            return SendResult(
                outcome=Outcome.TRANSIENT,
                status_code=status_code,
                ambiguous=True,
                error=f"HTTP {status_code} with \"sent\": false",
            )
        mid = _message_id(data)
        if mid is not None:
            return SendResult(outcome=Outcome.SENT, wa_message_id=mid, status_code=status_code)
        return SendResult(
            outcome=Outcome.TRANSIENT,
            status_code=status_code,
            ambiguous=True,
            error=f"HTTP {status_code} without a message id",
        )
    error = _error_text(status_code, body)
    if status_code == 404 and endpoint in MEDIA_ENDPOINTS:
        return SendResult(outcome=Outcome.PERMANENT, status_code=status_code, error=error)
    if status_code == 429:
        return SendResult(
            outcome=Outcome.RATE_LIMITED,
            status_code=status_code,
            retry_after=parse_retry_after(_header(headers, "Retry-After"), now=now),
            error=error,
        )
    problem = CHANNEL_STATUSES.get(status_code)
    if problem is not None:
        return SendResult(
            outcome=Outcome.CHANNEL_PROBLEM,
            channel_problem=problem,
            status_code=status_code,
            error=error,
        )
    if status_code in PERMANENT_STATUSES:
        return SendResult(outcome=Outcome.PERMANENT, status_code=status_code, error=error)
    return SendResult(outcome=Outcome.TRANSIENT, status_code=status_code, error=error)


def classify_read_receipt(
    status_code: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    wa_message_id: str,
    now: float | None = None,
) -> SendResult:
    """Classify Whapi's answer to `PUT /messages/{id}` (mark as read).

    A 2xx is `{"success": true}` (no message of its own): SENT, carrying
    the id of the message read. A 404 is that message unknown to Whapi:
    PERMANENT for this receipt, never the channel's problem. The rest as
    for a send."""
    if 200 <= status_code < 300:
        data = _json_object(body)
        if data is not None and data.get("success") is False:
            return SendResult(outcome=Outcome.TRANSIENT, status_code=status_code,
                              error=f'HTTP {status_code} with "success": false')
        return SendResult(outcome=Outcome.SENT, wa_message_id=wa_message_id,
                          status_code=status_code)
    if status_code == 404:
        return SendResult(outcome=Outcome.PERMANENT, status_code=status_code,
                          error=_error_text(status_code, body))
    return classify_response(status_code, body, headers, endpoint="read", now=now)


# -- exceptions ---------------------------------------------------------------

# Before the request left: safe to retry.
_AIOHTTP_CONNECT: Final = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
_HTTPX_CONNECT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Never left, but retrying won't help (bad URL, we built a bad request).
_NEVER_LEFT_PERMANENTLY: Final = (
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
    httpx.InvalidURL,
    aiohttp.InvalidURL,
    aiohttp.NonHttpUrlClientError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """exc, then its causes/contexts (innermost last), without cycles."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def root_transport_error(exc: BaseException) -> BaseException:
    """The most precise exception to judge by.

    httpx-aiohttp maps aiohttp errors onto httpx classes lossily (a
    `ServerDisconnectedError` after the request was written becomes
    `httpx.ConnectTimeout`), but keeps the original as `__cause__`: prefer
    the aiohttp exception when there is one.
    """
    for e in _chain(exc):
        if isinstance(e, aiohttp.ClientError):
            return e
    return exc


def is_connect_failure(exc: BaseException) -> bool:
    """True when the request provably never reached the server (retry is safe)."""
    root = root_transport_error(exc)
    if isinstance(root, aiohttp.ClientError):
        return isinstance(root, _AIOHTTP_CONNECT)
    if isinstance(root, _HTTPX_CONNECT):
        return True
    return isinstance(root, ConnectionRefusedError)


def _describe(exc: BaseException) -> str:
    root = root_transport_error(exc)
    name = type(root).__name__
    if isinstance(root, aiohttp.ConnectionTimeoutError | httpx.ConnectTimeout):
        return f"connect timeout ({name})"
    if isinstance(root, httpx.PoolTimeout):
        return f"timed out waiting for a connection ({name})"
    if is_connect_failure(exc):
        return f"connection failed ({name})"
    if isinstance(root, aiohttp.SocketTimeoutError | httpx.ReadTimeout):
        return f"read timeout after the request was sent ({name})"
    if isinstance(root, httpx.WriteTimeout):
        return f"write timeout while sending the request ({name})"
    if isinstance(root, aiohttp.ServerDisconnectedError | httpx.RemoteProtocolError):
        return f"server closed the connection before answering ({name})"
    if isinstance(root, TimeoutError | httpx.TimeoutException):
        return f"timeout after the request may have been sent ({name})"
    if isinstance(root, _NEVER_LEFT_PERMANENTLY):
        return f"invalid request or base URL ({name})"
    return f"network error after the request may have been sent ({name})"


def classify_exception(exc: BaseException) -> SendResult:
    """Classify a failure to get an HTTP answer at all. Always TRANSIENT;
    ambiguous unless the request provably never left."""
    root = root_transport_error(exc)
    never_left = is_connect_failure(exc) or isinstance(root, _NEVER_LEFT_PERMANENTLY)
    return SendResult(
        outcome=Outcome.TRANSIENT,
        ambiguous=not never_left,
        error=_describe(exc),
        extra={"exception": type(root).__name__},
    )
