"""The Whapi simulator: API fidelity, fault scoping, control API."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from outbox.providers.simulator.app import SimulatorState
from outbox.providers.simulator.control import (
    SimulatorControl,
    SimulatorStartError,
    start_simulator,
)
from tests.sim_fixtures import assert_spec, new_token

# Schema MessageID: Whapi's message ids are `<4-30>-<4-14>` of [A-Za-z0-9._].
ID_RE = re.compile(r"^[A-Za-z0-9._]{4,30}-[A-Za-z0-9._]{4,14}$")


@pytest.fixture
def http(sim_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim_url, timeout=10.0, trust_env=False, verify=False) as c:
        yield c


def post(
    http: httpx.Client, kind: str, body: Any, token: str | None = "tok-default-0123456789"
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.post(f"/messages/{kind}", json=body, headers=headers)


def assert_whapi_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status
    data = resp.json()
    assert set(data) == {"error"}
    err: dict[str, Any] = data["error"]
    assert err["code"] == status
    assert isinstance(err["message"], str) and err["message"]
    assert_spec("error", data)
    return err


# -- the Whapi API -----------------------------------------------------------------


def test_text_success_shape(http: httpx.Client, sim: SimulatorControl) -> None:
    token = new_token()
    before = time.time()
    resp = post(http, "text", {"to": "15551234567", "body": "hi"}, token)
    assert resp.status_code == 200
    data = resp.json()
    assert_spec("sent_message", data)
    assert data["sent"] is True
    msg = data["message"]
    assert ID_RE.match(msg["id"])
    assert msg["type"] == "text"
    assert msg["chat_id"] == "15551234567@s.whatsapp.net"
    assert msg["from_me"] is True
    assert msg["status"] == "pending"
    assert msg["source"] == "api"
    assert isinstance(msg["timestamp"], int)
    assert msg["text"] == {"body": "hi"}

    [rec] = sim.sent()
    assert (rec.id, rec.token, rec.to, rec.type, rec.body) == (
        msg["id"],
        token,
        "15551234567",
        "text",
        "hi",
    )
    assert before - 1 <= rec.received_at <= time.time() + 1
    assert token not in repr(rec)


@pytest.mark.parametrize(
    "to", ["15551234567", "15551234567@s.whatsapp.net", "120363-123456789@g.us", "123456789"]
)
def test_valid_recipients(http: httpx.Client, to: str) -> None:
    assert post(http, "text", {"to": to, "body": "x"}).status_code == 200


@pytest.mark.parametrize(
    "to", ["+15551234567", "12345678", "1555 123 4567", "abc123456789", "", 15551234567, None]
)
def test_bad_to_is_400(http: httpx.Client, sim: SimulatorControl, to: Any) -> None:
    body = {"body": "x"} if to is None else {"to": to, "body": "x"}
    err = assert_whapi_error(post(http, "text", body), 400)
    assert "'to'" in err["details"]
    assert sim.sent() == []
    assert sim.stats().rejected == {400: 1}


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("text", {"to": "15551234567"}, "body"),
        ("text", {"to": "15551234567", "body": ""}, "body"),
        ("text", {"to": "15551234567", "body": "   "}, "body"),
        ("text", {"to": "15551234567", "body": 42}, "body"),
        ("text", {"to": "15551234567", "body": "x", "typing_time": 61}, "typing_time"),
        ("image", {"to": "15551234567", "caption": "no media"}, "media"),
        ("document", {"to": "15551234567", "media": ""}, "media"),
        ("location", {"to": "15551234567", "latitude": 1.0}, "longitude"),
        ("location", {"to": "15551234567", "latitude": "1", "longitude": 2}, "latitude"),
        ("contact", {"to": "15551234567", "name": "A"}, "vcard"),
    ],
)
def test_missing_or_bad_fields_are_400(
    http: httpx.Client, sim: SimulatorControl, kind: str, body: dict[str, Any], field: str
) -> None:
    err = assert_whapi_error(post(http, kind, body), 400)
    assert f"'{field}'" in err["details"]
    assert sim.sent() == []


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b""])
def test_body_must_be_a_json_object(http: httpx.Client, raw: bytes) -> None:
    resp = http.post("/messages/text", content=raw, headers={"Authorization": "Bearer abc"})
    assert_whapi_error(resp, 400)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Token abc"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer a b"},
    ],
)
def test_missing_or_malformed_auth_is_401(
    http: httpx.Client, sim: SimulatorControl, headers: dict[str, str]
) -> None:
    resp = http.post("/messages/text", json={"to": "15551234567", "body": "x"}, headers=headers)
    assert_whapi_error(resp, 401)
    assert sim.sent() == []
    assert sim.stats().rejected == {401: 1}


def test_auth_scheme_is_case_insensitive(http: httpx.Client) -> None:
    resp = http.post(
        "/messages/text",
        json={"to": "15551234567", "body": "x"},
        headers={"Authorization": "bearer abc"},
    )
    assert resp.status_code == 200


def test_unknown_endpoint_is_a_forward_of_an_unknown_message(http: httpx.Client) -> None:
    # POST /messages/{MessageID} is "forward message": an unknown id is a 404.
    err = assert_whapi_error(post(http, "nonsense", {"to": "15551234567"}), 404)
    assert err["message"] == "Specified message not found"


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("image", {"media": "https://example.com/a.png", "caption": "c"}),
        ("video", {"media": "https://example.com/a.mp4"}),
        ("gif", {"media": "https://example.com/a.gif"}),
        ("short", {"media": "https://example.com/a.mp4"}),
        ("document", {"media": "https://example.com/a.pdf", "filename": "a.pdf"}),
        ("audio", {"media": "T2dnUw==", "mime_type": "audio/ogg"}),
        ("voice", {"media": "T2dnUw==", "mime_type": "audio/ogg"}),
        ("location", {"latitude": 52.5, "longitude": 13.4, "name": "Berlin"}),
        ("contact", {"name": "Ann", "vcard": "BEGIN:VCARD\nEND:VCARD"}),
    ],
)
def test_every_send_endpoint(
    http: httpx.Client, sim: SimulatorControl, kind: str, body: dict[str, Any]
) -> None:
    resp = post(http, kind, {"to": "15551234567", **body})
    assert resp.status_code == 200
    assert_spec("sent_message", resp.json())
    assert resp.json()["message"]["type"] == kind
    [rec] = sim.sent()
    assert rec.type == kind
    assert rec.payload == {"to": "15551234567", **body}


def test_get_message_by_id_only_for_its_token(http: httpx.Client) -> None:
    token = new_token()
    mid = post(http, "text", {"to": "15551234567", "body": "x"}, token).json()["message"]["id"]
    resp = http.get(f"/messages/{mid}", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200
    assert resp.json()["id"] == mid
    other = http.get(f"/messages/{mid}", headers={"Authorization": f"Bearer {new_token()}"})
    assert_whapi_error(other, 404)
    assert_whapi_error(http.get(f"/messages/{mid}"), 401)


def test_health(http: httpx.Client) -> None:
    data = http.get("/health").json()
    assert data["status"] == {"code": 4, "text": "AUTH"}
    assert_spec("health", data)


def test_ids_are_unique(http: httpx.Client) -> None:
    ids = {
        post(http, "text", {"to": "15551234567", "body": "x"}).json()["message"]["id"]
        for _ in range(300)
    }
    assert len(ids) == 300


# -- faults and scoping ------------------------------------------------------------------


def test_faults_per_token(http: httpx.Client, sim: SimulatorControl) -> None:
    bad, good = new_token(), new_token()
    sim.set_faults(token=bad, error_status=503)
    body = {"to": "15551234567", "body": "x"}
    assert_whapi_error(post(http, "text", body, bad), 503)
    assert post(http, "text", body, good).status_code == 200
    stats = sim.stats()
    assert stats.tokens[bad].rejected == {503: 1} and stats.tokens[bad].accepted == 0
    assert stats.tokens[good].accepted == 1 and stats.tokens[good].rejected == {}
    assert [r.token for r in sim.sent()] == [good]


def test_faults_per_recipient(http: httpx.Client, sim: SimulatorControl) -> None:
    token = new_token()
    sim.set_faults(to="15550000001", error_status=403)
    assert_whapi_error(post(http, "text", {"to": "15550000001", "body": "x"}, token), 403)
    # the chat-id form of the same recipient is the same recipient
    assert_whapi_error(
        post(http, "text", {"to": "15550000001@s.whatsapp.net", "body": "x"}, token), 403
    )
    assert post(http, "text", {"to": "15550000002", "body": "x"}, token).status_code == 200


def test_faults_per_token_and_recipient(http: httpx.Client, sim: SimulatorControl) -> None:
    a, b = new_token(), new_token()
    sim.set_faults(token=a, to="15550000001", error_status=400)
    assert_whapi_error(post(http, "text", {"to": "15550000001", "body": "x"}, a), 400)
    assert post(http, "text", {"to": "15550000001", "body": "x"}, b).status_code == 200
    assert post(http, "text", {"to": "15550000002", "body": "x"}, a).status_code == 200


def test_scopes_merge_most_specific_last(http: httpx.Client, sim: SimulatorControl) -> None:
    token = new_token()
    sim.set_faults(error_status=500)
    sim.set_faults(token=token, error_status=402)
    assert_whapi_error(post(http, "text", {"to": "15551234567", "body": "x"}, token), 402)
    assert_whapi_error(post(http, "text", {"to": "15551234567", "body": "x"}, new_token()), 500)
    faults = sim.faults()
    assert {(f["token"], f["error_status"]) for f in faults} == {(None, 500), (token, 402)}
    sim.clear_faults(token=token)
    assert_whapi_error(post(http, "text", {"to": "15551234567", "body": "x"}, token), 500)
    sim.clear_faults()
    assert sim.faults() == []
    assert post(http, "text", {"to": "15551234567", "body": "x"}, token).status_code == 200


def test_retry_after_header_only_when_configured(http: httpx.Client, sim: SimulatorControl) -> None:
    sim.set_faults(error_status=429)
    resp = post(http, "text", {"to": "15551234567", "body": "x"})
    assert_whapi_error(resp, 429)
    assert "Retry-After" not in resp.headers
    sim.set_faults(error_status=429, retry_after=5)
    resp = post(http, "text", {"to": "15551234567", "body": "x"})
    assert resp.headers["Retry-After"] == "5"


def test_error_rate_between_0_and_1(http: httpx.Client, sim: SimulatorControl) -> None:
    sim.set_faults(error_status=500, error_rate=0.5)
    codes = [post(http, "text", {"to": "15551234567", "body": "x"}).status_code for _ in range(200)]
    assert set(codes) == {200, 500}  # P(all one kind) = 2 * 0.5**200
    stats = sim.stats()
    assert stats.accepted == codes.count(200)
    assert stats.rejected == {500: codes.count(500)}


def test_latency_is_applied(http: httpx.Client, sim: SimulatorControl) -> None:
    sim.set_faults(latency_ms=200)
    t0 = time.monotonic()
    assert post(http, "text", {"to": "15551234567", "body": "x"}).status_code == 200
    assert time.monotonic() - t0 >= 0.2  # a lower bound: never flaky on slow machines


def test_hang_never_answers_and_never_records(sim_url: str, sim: SimulatorControl) -> None:
    sim.set_faults(hang=True)
    with (
        httpx.Client(base_url=sim_url, timeout=0.3, trust_env=False) as short,
        pytest.raises(httpx.ReadTimeout),
    ):
        post(short, "text", {"to": "15551234567", "body": "x"})
    assert sim.sent() == []
    stats = sim.stats()
    assert stats.hangs == 1 and stats.rejected == {}
    deadline = time.monotonic() + 10  # the simulator notices the client left
    while sim.stats().hanging and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sim.stats().hanging == 0


def test_hang_rate_zero_never_hangs(http: httpx.Client, sim: SimulatorControl) -> None:
    sim.set_faults(hang_rate=0.0)
    assert post(http, "text", {"to": "15551234567", "body": "x"}).status_code == 200


def test_rate_limit_per_token(sim_url: str, sim: SimulatorControl) -> None:
    limited, other = new_token(), new_token()
    sim.set_faults(token=limited, rate_limit_per_s=5, retry_after=1)
    body = {"to": "15551234567", "body": "x"}

    def burst(token: str, n: int) -> tuple[list[int], float]:
        with httpx.Client(base_url=sim_url, timeout=10, trust_env=False) as c:
            t0 = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(lambda _: post(c, "text", body, token).status_code, range(n)))
            return codes, time.monotonic() - t0

    codes, elapsed = burst(limited, 30)
    assert set(codes) <= {200, 429}
    accepted = codes.count(200)
    # Never more than 5 in any 1 s window.
    assert 1 <= accepted <= 5 * (int(elapsed) + 1)
    if elapsed < 1.0:
        assert accepted == 5 and codes.count(429) == 25
    other_codes, _ = burst(other, 10)
    assert other_codes == [200] * 10
    stats = sim.stats()
    assert stats.tokens[limited].rejected.get(429, 0) == codes.count(429)
    assert stats.tokens[other].rejected == {}


def test_global_rate_limit_counts_each_token_separately(
    http: httpx.Client, sim: SimulatorControl
) -> None:
    sim.set_faults(rate_limit_per_s=2)
    a, b = new_token(), new_token()
    t0 = time.monotonic()
    codes = {
        t: [post(http, "text", {"to": "15551234567", "body": "x"}, t).status_code for _ in range(3)]
        for t in (a, b)
    }
    if time.monotonic() - t0 < 1.0:
        assert codes == {a: [200, 200, 429], b: [200, 200, 429]}
    else:
        assert all(c[:2] == [200, 200] for c in codes.values())


@pytest.mark.parametrize(
    "body",
    [
        {"error_rate": 2},
        {"error_status": 200},
        {"error_status": "500"},
        {"latency_ms": -1},
        {"hang": "yes"},
        {"nonsense": 1},
        {"token": 5},
    ],
)
def test_bad_fault_config_is_400(http: httpx.Client, sim: SimulatorControl, body: Any) -> None:
    resp = http.post("/_sim/faults", json=body)
    assert resp.status_code == 400
    assert "error" in resp.json()
    assert sim.faults() == []


# -- control API -------------------------------------------------------------------------


def test_reset_clears_records_stats_and_faults(http: httpx.Client, sim: SimulatorControl) -> None:
    token = new_token()
    post(http, "text", {"to": "15551234567", "body": "a"}, token)
    last = sim.sent()[-1].seq
    sim.set_faults(error_status=500)
    post(http, "text", {"to": "15551234567", "body": "b"}, token)
    sim.reset()
    assert sim.sent() == []
    stats = sim.stats()
    assert (stats.accepted, stats.rejected, stats.tokens, stats.requests) == (0, {}, {}, 0)
    assert sim.faults() == []
    post(http, "text", {"to": "15551234567", "body": "c"}, token)
    [rec] = sim.sent()
    assert rec.seq > last  # sequence numbers never restart
    assert rec.body == "c"


def test_since_pagination(http: httpx.Client, sim: SimulatorControl) -> None:
    a, b = new_token(), new_token()
    for i in range(25):
        post(http, "text", {"to": "15551234567", "body": f"m{i:02d}"}, a if i % 2 else b)
    everything = sim.sent()
    assert [r.body for r in everything] == [f"m{i:02d}" for i in range(25)]
    seqs = [r.seq for r in everything]
    assert seqs == sorted(set(seqs))

    page = http.get("/_sim/sent", params={"since": 0, "limit": 10}).json()
    assert page["count"] == 10 and page["has_more"] is True
    assert page["next_since"] == page["records"][-1]["seq"]
    collected = list(page["records"])
    while page["has_more"]:
        page = http.get("/_sim/sent", params={"since": page["next_since"], "limit": 10}).json()
        collected += page["records"]
    assert [r["seq"] for r in collected] == seqs

    assert [r.body for r in sim.sent(since=seqs[19])] == ["m20", "m21", "m22", "m23", "m24"]
    assert [r.body for r in sim.sent(token=a, since=seqs[19])] == ["m21", "m23"]
    assert [r.body for r in sim.sent(token=b, page_size=3)] == [
        f"m{i:02d}" for i in range(0, 25, 2)
    ]
    assert len(sim.sent(limit=7)) == 7
    assert sim.sent(since=seqs[-1]) == []
    assert sim.sent(token=new_token()) == []


def test_sent_filter_by_recipient(http: httpx.Client, sim: SimulatorControl) -> None:
    for to in ("15550000001", "15550000002", "15550000001@s.whatsapp.net"):
        post(http, "text", {"to": to, "body": to})
    assert [r.body for r in sim.sent(to="15550000001")] == [
        "15550000001",
        "15550000001@s.whatsapp.net",
    ]


def test_stats_count_in_flight(sim_url: str, sim: SimulatorControl) -> None:
    sim.set_faults(latency_ms=300)
    with (
        httpx.Client(base_url=sim_url, timeout=10, trust_env=False) as c,
        ThreadPoolExecutor(6) as pool,
    ):
        codes = list(
            pool.map(
                lambda _: post(c, "text", {"to": "15551234567", "body": "x"}).status_code, range(6)
            )
        )
    assert codes == [200] * 6
    stats = sim.stats()
    assert 1 <= stats.max_in_flight <= 6
    assert stats.in_flight == 0
    assert stats.requests == 6


@pytest.mark.slow
def test_state_pagination_scales_to_50k_records() -> None:
    state = SimulatorState(seed=1)
    for i in range(50_000):
        token = "a" if i % 3 else "b"
        msg = {"id": state.unique_id(), "chat_id": "15551234567@s.whatsapp.net"}
        state.record(
            token=token,
            kind="text",
            payload={"to": "15551234567", "body": str(i)},
            message=msg,
            received_at=0.0,
        )
    page, more = state.sent(token=None, to=None, since=49_990, limit=100)
    assert [r["seq"] for r in page] == list(range(49_991, 50_001)) and not more
    page, more = state.sent(token="b", to=None, since=49_990, limit=100)
    assert [r["body"] for r in page] == [str(i) for i in range(49_990, 50_000) if i % 3 == 0]
    page, more = state.sent(token="a", to=None, since=0, limit=10)
    assert len(page) == 10 and more
    state.reset()
    assert state.sent(token=None, to=None, since=0, limit=10) == ([], False)


@pytest.mark.slow
def test_start_simulator_reports_a_dead_subprocess() -> None:
    with (
        pytest.raises(SimulatorStartError, match="unrecognized arguments"),
        start_simulator(extra_args=("--no-such-flag",)),
    ):
        pass


@pytest.mark.slow
def test_start_simulator_uses_a_free_port_and_stops(simulator_process: Any) -> None:
    with start_simulator() as other:
        assert other.url != simulator_process.url
        assert httpx.get(other.url + "/health", trust_env=False).status_code == 200
        proc = other.process
    assert proc.poll() is not None
