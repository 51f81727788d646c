"""Classification of Whapi answers and transport failures (pure functions)."""

from __future__ import annotations

import json
from email.utils import format_datetime
from types import SimpleNamespace
from typing import Any

import aiohttp
import httpx
import pytest
from httpx_aiohttp.transport import map_aiohttp_exceptions

from outbox.providers.base import ChannelProblem, Outcome
from outbox.providers.classify import (
    MAX_REASON_CHARS,
    MEDIA_ENDPOINTS,
    classify_exception,
    classify_response,
    is_connect_failure,
    parse_retry_after,
)

NOW = 1_750_000_000.0


def ok_body(mid: Any = "PsoNMWuDsT5JpqX-wK0Vgg") -> bytes:
    return json.dumps({"sent": True, "message": {"id": mid, "type": "text"}}).encode()


def err_body(code: int, message: str, details: str | None = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        err["details"] = details
    return json.dumps({"error": err}).encode()


# -- 2xx ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 299])
def test_any_2xx_with_id_is_sent(status: int) -> None:
    r = classify_response(status, ok_body(), {})
    assert r.outcome is Outcome.SENT
    assert r.wa_message_id == "PsoNMWuDsT5JpqX-wK0Vgg"
    assert r.status_code == status
    assert r.error is None
    assert not r.ambiguous


def test_numeric_id_is_accepted_as_text() -> None:
    r = classify_response(200, ok_body(12345), {})
    assert r.outcome is Outcome.SENT
    assert r.wa_message_id == "12345"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"\xff\xfe",
        b"[]",
        b'{"sent": true}',
        b'{"sent": true, "message": null}',
        b'{"sent": true, "message": {}}',
        b'{"sent": true, "message": {"id": ""}}',
        b'{"sent": true, "message": {"id": "   "}}',
        b'{"sent": true, "message": {"id": true}}',
        b'{"sent": true, "message": {"id": {"x": 1}}}',
    ],
)
def test_2xx_without_usable_id_is_transient_and_ambiguous(body: bytes) -> None:
    r = classify_response(200, body, {})
    assert r.outcome is Outcome.TRANSIENT
    assert r.ambiguous, "Whapi may have sent it: a retry may duplicate"
    assert r.wa_message_id is None
    assert r.error == "HTTP 200 without a message id"


# -- the WHAPI.md table -------------------------------------------------------

TABLE: list[tuple[int, Outcome, ChannelProblem | None]] = [
    (400, Outcome.PERMANENT, None),
    (401, Outcome.CHANNEL_PROBLEM, ChannelProblem.UNAUTHORIZED),
    (402, Outcome.CHANNEL_PROBLEM, ChannelProblem.TRIAL_LIMIT),
    (403, Outcome.PERMANENT, None),
    (404, Outcome.CHANNEL_PROBLEM, ChannelProblem.NOT_FOUND),  # on /messages/text
    (413, Outcome.PERMANENT, None),
    (415, Outcome.PERMANENT, None),
    (429, Outcome.RATE_LIMITED, None),
    (500, Outcome.TRANSIENT, None),
    (502, Outcome.TRANSIENT, None),
    (503, Outcome.TRANSIENT, None),
    (504, Outcome.TRANSIENT, None),
    (599, Outcome.TRANSIENT, None),
    # "other codes" -> transient
    (100, Outcome.TRANSIENT, None),
    (302, Outcome.TRANSIENT, None),
    (405, Outcome.TRANSIENT, None),
    (408, Outcome.TRANSIENT, None),
    (409, Outcome.TRANSIENT, None),
    (422, Outcome.TRANSIENT, None),
]


@pytest.mark.parametrize(("status", "outcome", "problem"), TABLE)
def test_status_table(status: int, outcome: Outcome, problem: ChannelProblem | None) -> None:
    r = classify_response(status, err_body(status, "Something went wrong"), {})
    assert r.outcome is outcome
    assert r.channel_problem is problem
    assert r.status_code == status
    assert r.wa_message_id is None
    assert not r.ambiguous  # the provider answered: it did not send
    assert r.error == f"HTTP {status}: Something went wrong"


@pytest.mark.parametrize("endpoint", sorted(MEDIA_ENDPOINTS))
def test_404_on_a_media_endpoint_fails_that_message_only(endpoint: str) -> None:
    # The spec's one meaning of 404 on a send: "media with specified id not found".
    body = err_body(404, "Media with specified id not found")
    r = classify_response(404, body, {}, endpoint=endpoint)
    assert r.outcome is Outcome.PERMANENT and r.channel_problem is None
    assert r.error == "HTTP 404: Media with specified id not found"


def test_404_elsewhere_pauses_the_channel_without_disabling_it() -> None:
    r = classify_response(404, err_body(404, "Not found"), {}, endpoint="text")
    assert r.outcome is Outcome.CHANNEL_PROBLEM and r.channel_problem is ChannelProblem.NOT_FOUND


@pytest.mark.parametrize("status", [200, 201])
def test_2xx_saying_sent_false_is_not_a_success(status: int) -> None:
    body = json.dumps({"sent": False, "message": {"id": "PsoNMWuDsT5JpqX-wK0Vgg"}}).encode()
    r = classify_response(status, body, {})
    assert r.outcome is Outcome.TRANSIENT and r.ambiguous
    assert r.wa_message_id is None
    assert r.error == f'HTTP {status} with "sent": false'


def test_error_with_id_in_body_is_still_an_error() -> None:
    body = json.dumps({"error": {"code": 400, "message": "bad"}, "message": {"id": "x"}})
    assert classify_response(400, body.encode(), {}).outcome is Outcome.PERMANENT


# -- error text ---------------------------------------------------------------


def test_reason_includes_details() -> None:
    r = classify_response(400, err_body(400, "Wrong request parameters", "'to' is invalid"), {})
    assert r.error == "HTTP 400: Wrong request parameters: 'to' is invalid"


@pytest.mark.parametrize("body", [b"", b"<html>502 Bad Gateway</html>", b"[1,2]", b"null"])
def test_reason_falls_back_to_the_status(body: bytes) -> None:
    assert classify_response(502, body, {}).error == "HTTP 502"


def test_reason_is_truncated_and_single_line() -> None:
    r = classify_response(400, err_body(400, "line one\nline two\t" + "x" * 1000), {})
    assert r.error is not None
    assert "\n" not in r.error and "\t" not in r.error
    assert r.error.startswith("HTTP 400: line one line two xxx")
    assert len(r.error) <= len("HTTP 400: ") + MAX_REASON_CHARS


def test_string_error_and_top_level_message_are_understood() -> None:
    assert classify_response(403, b'{"error": "nope"}', {}).error == "HTTP 403: nope"
    assert classify_response(403, b'{"message": "denied"}', {}).error == "HTTP 403: denied"


# -- 429 and Retry-After -------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "7"}, 7.0),  # case-insensitive for plain dicts
        ({"RETRY-AFTER": " 30 "}, 30.0),
        ({"Retry-After": "0"}, 0.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"Retry-After": ""}, None),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-5"}, None),
        ({"Retry-After": "inf"}, None),
        ({"Retry-After": "nan"}, None),
        ({"Retry-After": "Wed, 32 Foo 2015 99:99:99 GMT"}, None),
    ],
)
def test_429_retry_after(headers: dict[str, str], expected: float | None) -> None:
    r = classify_response(429, err_body(429, "Too many requests"), headers, now=NOW)
    assert r.outcome is Outcome.RATE_LIMITED
    assert r.retry_after == expected
    assert r.error == "HTTP 429: Too many requests"


def test_429_retry_after_http_date() -> None:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(NOW + 120, tz=UTC)
    header = format_datetime(when, usegmt=True)  # "Sun, 15 Jun 2025 15:08:20 GMT"
    r = classify_response(429, b"", {"Retry-After": header}, now=NOW)
    assert r.retry_after == pytest.approx(120.0)


def test_429_retry_after_date_in_the_past_is_zero() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=NOW) == 0.0


def test_retry_after_minus_zero_zone_is_utc() -> None:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(NOW + 60, tz=UTC).strftime("%a, %d %b %Y %H:%M:%S -0000")
    assert parse_retry_after(when, now=NOW) == pytest.approx(60.0)


def test_retry_after_works_with_httpx_headers() -> None:
    headers = httpx.Headers({"Retry-After": "12"})
    assert classify_response(429, b"", headers).retry_after == 12.0


def test_retry_after_ignored_on_other_statuses() -> None:
    assert classify_response(503, b"", {"Retry-After": "5"}).retry_after is None


# -- exceptions ---------------------------------------------------------------


def _req() -> httpx.Request:
    return httpx.Request("POST", "http://127.0.0.1:1/messages/text")


def _connector_error() -> aiohttp.ClientConnectorError:
    key = SimpleNamespace(host="127.0.0.1", port=1, ssl=None)
    return aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "refused"))  # type: ignore[arg-type]


def _via_httpx_aiohttp(exc: Exception) -> BaseException:
    """What httpx-aiohttp actually raises for an aiohttp exception."""
    try:
        with map_aiohttp_exceptions():
            raise exc
    except Exception as mapped:
        return mapped
    raise AssertionError("not raised")


NEVER_LEFT: list[BaseException] = [
    httpx.ConnectError("refused", request=_req()),
    httpx.ConnectTimeout("connect timeout", request=_req()),
    httpx.PoolTimeout("no connection", request=_req()),
    ConnectionRefusedError(111, "refused"),
    _connector_error(),
    aiohttp.ConnectionTimeoutError("connect timeout"),
    _via_httpx_aiohttp(_connector_error()),
    _via_httpx_aiohttp(aiohttp.ConnectionTimeoutError("connect timeout")),
]

MAYBE_SENT: list[BaseException] = [
    httpx.ReadTimeout("read timeout", request=_req()),
    httpx.WriteTimeout("write timeout", request=_req()),
    httpx.ReadError("reset", request=_req()),
    httpx.WriteError("broken pipe", request=_req()),
    httpx.RemoteProtocolError("server disconnected", request=_req()),
    TimeoutError(),
    aiohttp.SocketTimeoutError("read timeout"),
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientPayloadError("truncated"),
    aiohttp.ClientOSError(104, "connection reset"),
    # httpx-aiohttp maps these to httpx.ConnectTimeout / ReadTimeout; the
    # aiohttp cause decides: the request had been written.
    _via_httpx_aiohttp(aiohttp.ServerDisconnectedError()),
    _via_httpx_aiohttp(aiohttp.SocketTimeoutError("read timeout")),
    _via_httpx_aiohttp(aiohttp.ClientOSError(104, "connection reset")),
    RuntimeError("something unexpected"),
]


def test_httpx_aiohttp_mapping_is_lossy_as_assumed() -> None:
    """Guard: if this starts failing, httpx-aiohttp fixed its mapping."""
    assert isinstance(_via_httpx_aiohttp(aiohttp.ServerDisconnectedError()), httpx.ConnectTimeout)


@pytest.mark.parametrize("exc", NEVER_LEFT, ids=lambda e: type(e).__name__)
def test_connect_failures_are_transient_not_ambiguous_and_retryable(exc: BaseException) -> None:
    r = classify_exception(exc)
    assert r.outcome is Outcome.TRANSIENT
    assert not r.ambiguous
    assert is_connect_failure(exc)
    assert r.status_code is None
    assert r.error


@pytest.mark.parametrize("exc", MAYBE_SENT, ids=lambda e: type(e).__name__)
def test_failures_after_sending_are_transient_ambiguous_not_retryable(
    exc: BaseException,
) -> None:
    r = classify_exception(exc)
    assert r.outcome is Outcome.TRANSIENT
    assert r.ambiguous
    assert not is_connect_failure(exc)
    assert r.error


def test_read_timeout_wording() -> None:
    r = classify_exception(httpx.ReadTimeout("x", request=_req()))
    assert r.error == "read timeout after the request was sent (ReadTimeout)"
    r = classify_exception(_via_httpx_aiohttp(aiohttp.ServerDisconnectedError()))
    assert r.error == "server closed the connection before answering (ServerDisconnectedError)"


@pytest.mark.parametrize(
    "exc",
    [
        httpx.UnsupportedProtocol("ftp://", request=_req()),
        httpx.InvalidURL("bad"),
        httpx.LocalProtocolError("bad header"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bad_url_never_left_but_is_not_retried(exc: BaseException) -> None:
    r = classify_exception(exc)
    assert r.outcome is Outcome.TRANSIENT
    assert not r.ambiguous
    assert not is_connect_failure(exc)


def test_exception_text_is_not_copied_into_the_error() -> None:
    secret = "tok_" + "s" * 28
    r = classify_exception(httpx.ReadError(f"boom {secret}", request=_req()))
    assert r.error is not None and secret not in r.error
