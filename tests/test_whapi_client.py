"""WhapiClient against the real simulator over loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from structlog.testing import capture_logs

from outbox.providers.base import ChannelProblem, Outcome, OutgoingMessage, Provider
from outbox.providers.simulator.control import SimulatorControl, start_simulator
from outbox.providers.whapi import DEFAULT_BASE_URL, WhapiClient
from tests.sim_fixtures import new_token, unused_port

TO = "15551234567@s.whatsapp.net"


@pytest.fixture
async def client() -> AsyncIterator[WhapiClient]:
    c = WhapiClient(timeout=5.0, connect_attempts=3, connect_retry_wait=0.01)
    yield c
    await c.aclose()


def text(body: str = "hello", to: str = TO) -> OutgoingMessage:
    return OutgoingMessage(to=to, message_type="text", payload={"body": body})


def test_default_base_url_is_whapi() -> None:
    assert DEFAULT_BASE_URL == "https://gate.whapi.cloud"


def test_is_a_provider() -> None:
    provider: Provider = WhapiClient()
    assert provider is not None


# -- success --------------------------------------------------------------------


async def test_text_is_sent_and_recorded_exactly(
    client: WhapiClient, sim: SimulatorControl, sim_url: str
) -> None:
    token = new_token()
    result = await client.send(base_url=sim_url, token=token, message=text("Order shipped"))

    assert result.outcome is Outcome.SENT
    assert result.status_code == 200
    assert result.wa_message_id
    assert result.extra["attempts"] == 1
    [rec] = sim.sent()
    assert rec.id == result.wa_message_id
    assert rec.token == token  # the Authorization: Bearer header
    assert rec.to == TO
    assert rec.type == "text"
    assert rec.body == "Order shipped"
    assert rec.payload == {"to": TO, "body": "Order shipped"}


MEDIA: list[tuple[str, dict[str, Any]]] = [
    ("image", {"media": "https://example.com/a.png", "caption": "look"}),
    ("video", {"media": "https://example.com/a.mp4", "caption": "watch", "mime_type": "video/mp4"}),
    (
        "document",
        {"media": "https://example.com/inv.pdf", "filename": "invoice.pdf", "caption": "inv"},
    ),
    ("audio", {"media": "data:audio/ogg;base64,T2dnUw==", "mime_type": "audio/ogg"}),
]


@pytest.mark.parametrize(("kind", "payload"), MEDIA, ids=[m[0] for m in MEDIA])
async def test_media_is_sent_to_its_endpoint(
    client: WhapiClient, sim: SimulatorControl, sim_url: str, kind: str, payload: dict[str, Any]
) -> None:
    token = new_token()
    msg = OutgoingMessage(to="15550001111", message_type=kind, payload=payload)
    result = await client.send(base_url=sim_url, token=token, message=msg)

    assert result.outcome is Outcome.SENT
    [rec] = sim.sent(token=token)
    assert rec.id == result.wa_message_id
    assert rec.type == kind
    assert rec.to == "15550001111"
    assert rec.payload == {"to": "15550001111", **payload}


async def test_payload_cannot_override_to(
    client: WhapiClient, sim: SimulatorControl, sim_url: str
) -> None:
    msg = OutgoingMessage(to=TO, message_type="text", payload={"body": "x", "to": "19999999999"})
    assert (await client.send(base_url=sim_url, token=new_token(), message=msg)).outcome is (
        Outcome.SENT
    )
    assert [r.to for r in sim.sent()] == [TO]


async def test_trailing_slash_in_base_url(
    client: WhapiClient, sim: SimulatorControl, sim_url: str
) -> None:
    result = await client.send(base_url=sim_url + "/", token=new_token(), message=text())
    assert result.outcome is Outcome.SENT
    assert len(sim.sent()) == 1


async def test_unsupported_type_is_permanent_and_sends_nothing(
    client: WhapiClient, sim: SimulatorControl, sim_url: str
) -> None:
    msg = OutgoingMessage(to=TO, message_type="sticker", payload={"media": "x"})
    result = await client.send(base_url=sim_url, token=new_token(), message=msg)
    assert result.outcome is Outcome.PERMANENT
    assert result.extra["attempts"] == 0
    assert sim.stats().requests == 0


async def test_unserialisable_payload_is_permanent(
    client: WhapiClient, sim: SimulatorControl, sim_url: str
) -> None:
    msg = OutgoingMessage(to=TO, message_type="text", payload={"body": object()})
    result = await client.send(base_url=sim_url, token=new_token(), message=msg)
    assert result.outcome is Outcome.PERMANENT
    assert sim.stats().requests == 0


async def test_simulator_validation_is_permanent_with_reason(
    client: WhapiClient, sim: SimulatorControl, sim_url: str
) -> None:
    # "+1..." is not a valid Whapi `to`: callers must normalise first.
    result = await client.send(base_url=sim_url, token=new_token(), message=text(to="+15551234567"))
    assert result.outcome is Outcome.PERMANENT
    assert result.status_code == 400
    assert result.error is not None
    assert result.error.startswith("HTTP 400: Wrong request parameters")
    assert "'to'" in result.error
    assert sim.sent() == []


# -- faults -----------------------------------------------------------------------

FAULTS: list[tuple[int, Outcome, ChannelProblem | None]] = [
    (500, Outcome.TRANSIENT, None),
    (502, Outcome.TRANSIENT, None),
    (503, Outcome.TRANSIENT, None),
    (400, Outcome.PERMANENT, None),
    (401, Outcome.CHANNEL_PROBLEM, ChannelProblem.UNAUTHORIZED),
    (402, Outcome.CHANNEL_PROBLEM, ChannelProblem.TRIAL_LIMIT),
    (403, Outcome.PERMANENT, None),
    (404, Outcome.CHANNEL_PROBLEM, ChannelProblem.NOT_FOUND),
    (413, Outcome.PERMANENT, None),
    (415, Outcome.PERMANENT, None),
    (429, Outcome.RATE_LIMITED, None),
]


@pytest.mark.parametrize(("status", "outcome", "problem"), FAULTS, ids=[str(f[0]) for f in FAULTS])
async def test_injected_status_is_classified(
    client: WhapiClient,
    sim: SimulatorControl,
    sim_url: str,
    status: int,
    outcome: Outcome,
    problem: ChannelProblem | None,
) -> None:
    token = new_token()
    sim.set_faults(token=token, error_status=status)
    result = await client.send(base_url=sim_url, token=token, message=text())

    assert result.outcome is outcome
    assert result.channel_problem is problem
    assert result.status_code == status
    assert not result.ambiguous
    assert result.retry_after is None
    assert result.error is not None and result.error.startswith(f"HTTP {status}: ")
    assert result.extra["attempts"] == 1  # an HTTP answer is never retried in-process
    stats = sim.stats()
    assert stats.accepted == 0 and sim.sent() == []
    assert stats.rejected == {status: 1}
    assert stats.tokens[token].rejected == {status: 1}


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(7, 7.0), (None, None), ("later", None), (2.5, 2.5)]
)
async def test_429_retry_after(
    client: WhapiClient,
    sim: SimulatorControl,
    sim_url: str,
    retry_after: float | str | None,
    expected: float | None,
) -> None:
    sim.set_faults(error_status=429, retry_after=retry_after)
    result = await client.send(base_url=sim_url, token=new_token(), message=text())
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.retry_after == expected


async def test_429_retry_after_http_date(
    client: WhapiClient, sim: SimulatorControl, sim_url: str
) -> None:
    sim.set_faults(error_status=429, retry_after="Fri, 31 Dec 9999 23:59:59 GMT")
    result = await client.send(base_url=sim_url, token=new_token(), message=text())
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.retry_after is not None and result.retry_after > 3600


async def test_hang_is_transient_ambiguous_and_not_retried(
    sim: SimulatorControl, sim_url: str
) -> None:
    sim.set_faults(hang=True)
    async with WhapiClient(timeout=0.5, connect_attempts=3) as client:
        result = await client.send(base_url=sim_url, token=new_token(), message=text())

    assert result.outcome is Outcome.TRANSIENT
    assert result.ambiguous
    assert result.status_code is None
    assert result.extra["attempts"] == 1
    assert result.error is not None and "timeout" in result.error
    stats = sim.stats()
    assert stats.requests == 1  # never retried after the request left
    assert stats.hangs == 1
    assert sim.sent() == []


async def test_accepted_then_hang_is_ambiguous_and_was_really_sent(
    sim: SimulatorControl, sim_url: str
) -> None:
    """The duplicate window: Whapi sent it, we saw a timeout."""
    sim.set_faults(hang=True, hang_after_send=True)
    async with WhapiClient(timeout=0.5) as client:
        result = await client.send(base_url=sim_url, token=new_token(), message=text())
    assert result.outcome is Outcome.TRANSIENT and result.ambiguous
    assert len(sim.sent()) == 1


async def test_connection_refused_is_retried_then_transient_not_ambiguous() -> None:
    dead = f"http://127.0.0.1:{unused_port()}"
    async with WhapiClient(timeout=2.0, connect_attempts=3, connect_retry_wait=0.01) as client:
        with capture_logs() as logs:
            result = await client.send(base_url=dead, token=new_token(), message=text())

    assert result.outcome is Outcome.TRANSIENT
    assert not result.ambiguous
    assert result.status_code is None
    assert result.extra["attempts"] == 3
    retries = [e for e in logs if e["event"] == "whapi.connect_retry"]
    assert [e["failed_attempt"] for e in retries] == [1, 2]
    assert {e["error_type"] for e in retries} == {"ClientConnectorError"}


async def test_connect_attempts_1_means_no_retry() -> None:
    dead = f"http://127.0.0.1:{unused_port()}"
    async with WhapiClient(timeout=2.0, connect_attempts=1) as client:
        result = await client.send(base_url=dead, token=new_token(), message=text())
    assert result.outcome is Outcome.TRANSIENT and not result.ambiguous
    assert result.extra["attempts"] == 1


async def test_client_survives_the_server_going_away_and_coming_back(
    sim: SimulatorControl, sim_url: str
) -> None:
    """Errors don't poison the pool: a send after failures works."""
    async with WhapiClient(timeout=0.5) as client:
        sim.set_faults(hang=True)
        first = await client.send(base_url=sim_url, token=new_token(), message=text())
        sim.clear_faults()
        second = await client.send(base_url=sim_url, token=new_token(), message=text())
    assert first.outcome is Outcome.TRANSIENT
    assert second.outcome is Outcome.SENT


@pytest.mark.slow
async def test_server_closing_idle_connections_is_harmless() -> None:
    """The server's keep-alive timeout is shorter than ours: the pooled
    connection it closed must not turn the next send into an error."""
    with start_simulator(extra_args=("--keepalive-timeout", "0.2")) as short_lived:
        async with WhapiClient(timeout=5.0, keepalive_expiry=30.0) as client:
            first = await client.send(base_url=short_lived.url, token=new_token(), message=text())
            await asyncio.sleep(0.6)  # the server has closed the idle connection by now
            second = await client.send(base_url=short_lived.url, token=new_token(), message=text())
        with short_lived.control() as control:
            records = control.sent()
    assert (first.outcome, second.outcome) == (Outcome.SENT, Outcome.SENT)
    assert [r.id for r in records] == [first.wa_message_id, second.wa_message_id]


async def test_send_after_aclose_is_a_programming_error(sim_url: str) -> None:
    client = WhapiClient()
    await client.aclose()
    await client.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="after aclose"):
        await client.send(base_url=sim_url, token=new_token(), message=text())


# -- secrets ------------------------------------------------------------------------


@pytest.fixture
def debug_level() -> Any:
    """The client's logger at DEBUG (its per-send event is a debug line)."""
    logger = logging.getLogger("outbox.providers.whapi")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.setLevel(level)


@pytest.mark.usefixtures("debug_level")
async def test_token_and_body_never_in_logs_repr_or_errors(
    sim: SimulatorControl, sim_url: str
) -> None:
    token = new_token()
    body = "my secret message body 4242"
    dead = f"http://127.0.0.1:{unused_port()}"
    results = []
    async with WhapiClient(timeout=0.5, connect_attempts=2, connect_retry_wait=0.01) as client:
        with capture_logs() as logs:
            results.append(await client.send(base_url=sim_url, token=token, message=text(body)))
            for status in (400, 401, 404, 429, 500):
                sim.set_faults(error_status=status, retry_after=3)
                results.append(await client.send(base_url=sim_url, token=token, message=text(body)))
            sim.set_faults(hang=True)
            results.append(await client.send(base_url=sim_url, token=token, message=text(body)))
            results.append(await client.send(base_url=dead, token=token, message=text(body)))
        client_repr = repr(client)

    assert [r.outcome for r in results].count(Outcome.SENT) == 1
    assert len(logs) >= len(results)
    for haystack in (repr(logs), client_repr, repr(results)):
        assert token not in haystack
        assert body not in haystack
    assert any(e["event"] == "whapi.sent" for e in logs)
    assert sum(e["event"] == "whapi.send_failed" for e in logs) == len(results) - 1


# -- concurrency ----------------------------------------------------------------------


async def test_200_concurrent_sends(
    client: WhapiClient, sim: SimulatorControl, sim_url: str
) -> None:
    tokens = [new_token() for _ in range(4)]
    msgs = [(tokens[i % 4], text(f"m{i:03d}", to=f"1555000{i:04d}")) for i in range(200)]
    results = await asyncio.gather(
        *(client.send(base_url=sim_url, token=t, message=m) for t, m in msgs)
    )

    assert all(r.outcome is Outcome.SENT for r in results)
    ids = [r.wa_message_id for r in results]
    assert len(set(ids)) == 200
    records = sim.sent()
    assert len(records) == 200
    assert {r.id for r in records} == set(ids)
    by_id = {r.id: r for r in records}
    for (token, msg), res in zip(msgs, results, strict=True):
        rec = by_id[str(res.wa_message_id)]
        assert (rec.token, rec.to, rec.body) == (token, msg.to, msg.payload["body"])
    assert [r.seq for r in records] == sorted(r.seq for r in records)


async def test_max_in_flight_bounds_concurrent_requests(
    sim: SimulatorControl, sim_url: str
) -> None:
    sim.set_faults(latency_ms=30)
    async with WhapiClient(max_in_flight=5) as client:
        results = await asyncio.gather(
            *(client.send(base_url=sim_url, token=new_token(), message=text()) for _ in range(40))
        )
    assert all(r.outcome is Outcome.SENT for r in results)
    stats = sim.stats()
    assert stats.accepted == 40
    assert stats.max_in_flight <= 5


# -- what goes on the wire ------------------------------------------------------------


async def test_headers_sent_and_cookies_never_kept_or_replayed() -> None:
    """A load balancer in front of Whapi may set a (sticky-session) cookie.
    One client serves every channel, so it must never send a cookie back:
    it would tie one channel's requests to another's session."""
    from aiohttp import web

    seen: list[dict[str, str]] = []

    async def send(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        resp = web.json_response({"sent": True, "message": {"id": f"m{len(seen)}"}})
        resp.set_cookie("AWSALB", f"sticky-{len(seen)}", path="/")
        return resp

    app = web.Application()
    app.router.add_post("/messages/text", send)
    runner = web.AppRunner(app)
    await runner.setup()
    port = unused_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with WhapiClient(timeout=5.0) as client:
            base = f"http://127.0.0.1:{port}"
            results = [
                await client.send(base_url=base, token=token, message=text())
                for token in (new_token(), new_token(), new_token())
            ]
    finally:
        await runner.cleanup()
    assert [r.outcome for r in results] == [Outcome.SENT] * 3
    assert [r.wa_message_id for r in results] == ["m1", "m2", "m3"]
    for headers in seen:
        assert "Cookie" not in headers
        assert headers["User-Agent"] == "whapi-outbox/0.1"
        assert headers["Accept"] == "application/json"
        assert headers["Content-Type"] == "application/json"
        assert headers["Authorization"].startswith("Bearer ")
        assert headers["Host"] == f"127.0.0.1:{port}"
    assert len({h["Authorization"] for h in seen}) == 3
