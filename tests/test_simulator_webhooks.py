"""The simulator's webhooks: modes, subscriptions, Whapi's retry backoff, the
delivery log, statuses and echoes of accepted sends, and Whapi's /settings."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from outbox.providers.simulator.channels import ChannelRegistry
from outbox.providers.simulator.control import Injection, SimulatorControl
from outbox.providers.simulator.settings import parse_control_config
from outbox.providers.simulator.webhooks import WebhookSender
from tests.sim_fixtures import (
    WebhookReceiver,
    assert_spec,
    assert_webhook_body,
    new_token,
    unused_port,
)

ALL_EVENTS = [("messages", "post"), ("messages", "put"), ("messages", "patch"),
              ("messages", "delete"), ("statuses", "post"), ("statuses", "put"),
              ("chats", "post"), ("chats", "patch"), ("chats", "delete"), ("calls", "post"),
              ("channel", "post"), ("users", "post"), ("users", "delete")]


@pytest.fixture
def http(sim_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim_url, timeout=10.0, trust_env=False) as c:
        yield c


def send_text(http: httpx.Client, token: str, to: str = "15551234567",
              kind: str = "text", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"to": to, **extra}
    if kind == "text":
        body.setdefault("body", "hello")
    resp = http.post(f"/messages/{kind}", json=body, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    message: dict[str, Any] = resp.json()["message"]
    return message


# One injection per (type, method): what each mode must turn into a URL and method.
INJECT: dict[tuple[str, str], Callable[[SimulatorControl, str], Injection]] = {
    ("messages", "post"): lambda c, t: c.inbound(t, text="hi", wait=True),
    ("messages", "put"): lambda c, t: c.inbound(t, text="hi", method="put", wait=True),
    ("messages", "patch"): lambda c, t: c.message_update(t, "AbCdEf12-XyZ9876", text="new",
                                                         wait=True),
    ("messages", "delete"): lambda c, t: c.messages_removed(t, ["AbCdEf12-XyZ9876"], wait=True),
    ("statuses", "post"): lambda c, t: c.status(t, "AbCdEf12-XyZ9876", "read", wait=True),
    ("statuses", "put"): lambda c, t: c.status(t, "AbCdEf12-XyZ9876", "read", method="put",
                                               wait=True),
    ("chats", "patch"): lambda c, t: c.chat(t, method="patch", archive=True, wait=True),
    ("users", "delete"): lambda c, t: c.logout(t, wait=True),
}


@pytest.mark.parametrize("event", list(INJECT), ids=lambda e: f"{e[0]}.{e[1]}")
@pytest.mark.parametrize(
    ("mode", "expect"),
    [
        ("body", lambda t, m: ("POST", "/hook")),
        ("path", lambda t, m: ("POST", f"/hook/{t}/{m}")),
        ("method", lambda t, m: (m.upper(), f"/hook/{t}")),
    ],
)
def test_each_mode_uses_the_right_url_and_method(
    sim: SimulatorControl, receiver: WebhookReceiver, mode: str,
    expect: Callable[[str, str], tuple[str, str]], event: tuple[str, str],
) -> None:
    token = new_token()
    sim.set_webhooks(f"{receiver.url}/hook", token=token, mode=mode, events=[event])
    injected = INJECT[event](sim, token)
    assert injected.delivered is True
    [got] = receiver.wait_for(1)
    assert (got.method, got.path) == expect(*event)
    assert got.json == injected.body
    assert got.json["event"] == {"type": event[0], "event": event[1]}
    assert got.headers["content-type"] == "application/json"
    assert_webhook_body(got.json)


def test_mode_keeps_the_query_string(sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    sim.set_webhooks(f"{receiver.url}/hook/?key=v1", token=token, mode="path",
                     events=[("messages", "post")])
    sim.inbound(token, wait=True)
    [got] = receiver.wait_for(1)
    assert got.path == "/hook/messages/post?key=v1"


def test_custom_headers_are_sent_and_only_their_names_shown(
        sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    config = sim.set_webhooks(receiver.url, token=token, events=[("messages", "post")],
                              headers={"X-Secret": "s3cret", "Authorization": "Bearer abc"})
    assert config["webhooks"][0]["webhooks"][0]["headers"] == ["Authorization", "X-Secret"]
    assert "s3cret" not in str(sim.webhooks())
    sim.inbound(token, wait=True)
    [got] = receiver.wait_for(1)
    assert got.headers["x-secret"] == "s3cret"
    assert got.headers["authorization"] == "Bearer abc"


def test_only_subscribed_events_are_sent(sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    sim.set_webhooks(receiver.url, token=token, events=[("messages", "post")])
    assert sim.inbound(token, method="put", wait=True).deliveries == []
    assert sim.status(token, "AbCdEf12-XyZ9876", "read", wait=True).deliveries == []
    assert sim.logout(token).deliveries == []
    posted = sim.inbound(token, text="only me", wait=True)
    assert posted.delivered is True and len(posted.deliveries) == 1
    time.sleep(0.2)  # anything unsubscribed would have arrived by now
    assert [b["event"] for b in receiver.bodies()] == [{"type": "messages", "event": "post"}]


def test_several_webhooks_each_get_their_events(
        sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    sim.set_webhooks(token=token, webhooks=[
        {"url": f"{receiver.url}/a", "events": [{"type": "messages", "method": "post"}]},
        {"url": f"{receiver.url}/b", "mode": "method",
         "events": [{"type": "messages", "method": "post"},
                    {"type": "statuses", "method": "post"}]},
    ])
    assert len(sim.inbound(token, wait=True).deliveries) == 2
    assert len(sim.status(token, "AbCdEf12-XyZ9876", "sent", wait=True).deliveries) == 1
    got = sorted((r.method, r.path) for r in receiver.wait_for(3))
    assert got == [("POST", "/a"), ("POST", "/b/messages"), ("POST", "/b/statuses")]


# -- retries ----------------------------------------------------------------------------


@pytest.mark.slow
def test_retries_until_200_with_linear_backoff(
        sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    receiver.script = [500, 500, 500]
    sim.set_webhooks(receiver.url, token=token, events=[("messages", "post")],
                     callback_backoff_delay_ms=100, max_callback_backoff_delay_ms=60_000)
    injected = sim.inbound(token, wait=True)
    assert injected.delivered is True
    got = receiver.wait_for(4)
    time.sleep(0.4)  # a fifth attempt would come 400 ms after the fourth
    assert len(receiver.requests) == 4
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    # Whapi's linear backoff: delay, 2 x delay, 3 x delay (lower bounds only).
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.3, gaps
    log = sim.webhook_log(token=token)
    assert [(a.attempt, a.status) for a in log] == [(1, 500), (2, 500), (3, 500), (4, 200)]
    assert {a.delivery for a in log} == set(injected.deliveries)
    assert all(a.body == injected.body and a.url == receiver.url for a in log)
    stats = sim.webhook_stats()
    assert (stats.posted, stats.failed, stats.retries, stats.attempts) == (1, 0, 3, 4)
    assert stats.statuses == {500: 3, 200: 1}


def test_backoff_is_capped(sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    receiver.script = [503] * 4
    sim.set_webhooks(receiver.url, token=token, events=[("messages", "post")],
                     callback_backoff_delay_ms=100, max_callback_backoff_delay_ms=100)
    sim.inbound(token, wait=True)
    got = receiver.wait_for(5)
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert all(g >= 0.1 for g in gaps), gaps
    # Uncapped, the waits would be 0.1 + 0.2 + 0.3 + 0.4 = 1.0 s; capped, 0.4 s.
    assert sum(gaps) < 0.9, gaps


def test_any_other_status_than_200_is_retried(
        sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    # The spec: "each time a callback fails to get a HTTPS 200 OK response".
    token = new_token()
    receiver.script = [204, 201, 400, 401]
    sim.set_webhooks(receiver.url, token=token, events=[("messages", "post")],
                     callback_backoff_delay_ms=20)
    assert sim.inbound(token, wait=True).delivered is True
    assert [a.status for a in sim.webhook_log(token=token)] == [204, 201, 400, 401, 200]


def test_never_gives_up_until_the_scope_is_removed(
        sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    url = f"http://127.0.0.1:{unused_port()}/nobody"
    sim.set_webhooks(url, token=token, events=[("messages", "post")],
                     callback_backoff_delay_ms=5, max_callback_backoff_delay_ms=20)
    injected = sim.inbound(token, wait=True, wait_timeout_s=0.5)
    assert injected.delivered is False
    attempts = sim.wait_webhook_attempts(12, token=token)
    assert {a.status for a in attempts} == {0} and attempts[0].error
    stats = sim.webhook_stats()
    assert stats.failed == 1 and stats.pending == 1 and stats.posted == 0
    sim.clear_webhooks(token)
    time.sleep(0.1)
    stats = sim.webhook_stats()
    assert stats.pending == 0 and stats.failed == 0
    count = len(sim.webhook_log(token=token))
    time.sleep(0.1)
    assert len(sim.webhook_log(token=token)) == count


def test_a_failing_receiver_recovers(sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    receiver.default_status = 500
    sim.set_webhooks(receiver.url, token=token, events=[("messages", "post")],
                     callback_backoff_delay_ms=5, max_callback_backoff_delay_ms=10)
    injected = sim.inbound(token)
    receiver.wait_for(10)
    receiver.default_status = 200
    deadline = time.monotonic() + 5
    while sim.webhook_stats().posted == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    log = sim.webhook_log(token=token)
    assert log[-1].status == 200 and log[-1].attempt == len(log) >= 11
    assert {a.delivery for a in log} == set(injected.deliveries)


async def test_deliveries_over_the_cap_are_dropped_and_counted() -> None:
    sender = WebhookSender(ChannelRegistry(accept_any_token=True), max_pending=2)
    _, config = parse_control_config({
        "url": f"http://127.0.0.1:{unused_port()}/", "callback_backoff_delay_ms": 60_000,
        "events": [{"type": "messages", "method": "post"}]})
    sender.set_config(None, config)
    try:
        kept = [sender.emit(None, "messages", "post", {"messages": []})[1] for _ in range(3)]
        assert [len(d) for d in kept] == [1, 1, 0]
        stats = sender.as_json()["stats"]
        assert (stats["scheduled"], stats["dropped"], stats["pending"]) == (2, 1, 2)
    finally:
        await sender.aclose()
    assert sender.as_json()["stats"]["pending"] == 0


def test_reset_cancels_pending_deliveries(sim: SimulatorControl) -> None:
    token = new_token()
    sim.set_webhooks(f"http://127.0.0.1:{unused_port()}/", token=token,
                     events=[("messages", "post")], callback_backoff_delay_ms=5)
    sim.inbound(token)
    sim.wait_webhook_attempts(2, token=token)
    sim.reset()
    stats = sim.webhook_stats()
    assert stats.pending == 0 and stats.attempts == 0
    time.sleep(0.1)
    assert sim.webhook_log() == []


def test_log_pages_by_seq_and_filters_by_token(
        sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    a, b = new_token(), new_token()
    for token in (a, b):
        sim.set_webhooks(receiver.url, token=token, events=[("messages", "post")])
    for i in range(3):
        sim.inbound(a, text=f"a{i}", wait=True)
        sim.inbound(b, text=f"b{i}", wait=True)
    log = sim.webhook_log()
    assert [x.body["messages"][0]["text"]["body"] for x in log] == [
        "a0", "b0", "a1", "b1", "a2", "b2"]
    seqs = [x.seq for x in log]
    assert seqs == sorted(set(seqs))
    assert [x.body["messages"][0]["text"]["body"] for x in sim.webhook_log(token=b)] == [
        "b0", "b1", "b2"]
    assert [x.seq for x in sim.webhook_log(seqs[3])] == seqs[4:]
    assert len(sim.webhook_log(limit=2)) == 2


# -- what an accepted send triggers ------------------------------------------------------


def test_statuses_of_an_accepted_send(
        http: httpx.Client, sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    sim.set_webhooks(receiver.url, token=token,
                     delays_ms={"sent": 0, "delivered": 50, "read": 100, "played": 150})
    message = send_text(http, token)
    got = receiver.wait_for(3)
    time.sleep(0.2)
    assert len(receiver.requests) == 3  # no `played` for a text
    statuses = [r.json["statuses"][0] for r in got]
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    assert [s["code"] for s in statuses] == [2, 3, 4]
    for s, r in zip(statuses, got, strict=True):
        assert s["id"] == message["id"]
        assert s["recipient_id"] == "15551234567@s.whatsapp.net"
        assert isinstance(s["timestamp"], str) and s["timestamp"].isdigit()
        assert r.json["event"] == {"type": "statuses", "event": "post"}
        assert r.json["channel_id"].startswith("SIMUL-")
        assert_webhook_body(r.json)
    # GET /messages/{id} follows the statuses.
    resp = http.get(f"/messages/{message['id']}", headers={"Authorization": f"Bearer {token}"})
    assert resp.json()["status"] == "read"


def test_voice_sends_are_played(
        http: httpx.Client, sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    sim.set_webhooks(receiver.url, token=token,
                     delays_ms={"sent": 0, "delivered": 10, "read": 20, "played": 30})
    send_text(http, token, kind="voice", media="T2dnUw==", mime_type="audio/ogg")
    got = receiver.wait_for(4)
    assert [r.json["statuses"][0]["status"] for r in got] == ["sent", "delivered", "read",
                                                               "played"]
    assert got[3].json["statuses"][0]["code"] == 5


def test_statuses_as_an_offline_backlog_go_by_put(
        http: httpx.Client, sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    sim.set_webhooks(receiver.url, token=token, mode="method", statuses_method="put",
                     delays_ms={"sent": 0, "delivered": 10})
    send_text(http, token)
    got = receiver.wait_for(2)
    assert [(r.method, r.path) for r in got] == [("PUT", "/statuses"), ("PUT", "/statuses")]
    assert all(r.json["event"] == {"type": "statuses", "event": "put"} for r in got)


def test_a_send_can_fail_later(
        http: httpx.Client, sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    sim.set_webhooks(receiver.url, token=token, delays_ms={"sent": 0, "failed": 20})
    send_text(http, token)
    failed = receiver.wait_for(2)[1].json["statuses"][0]
    assert failed["status"] == "failed" and failed["code"] == 0
    assert failed["errors"] and {"code", "message"} <= set(failed["errors"][0])


@pytest.mark.parametrize(
    ("kind", "extra"),
    [("text", {"body": "order shipped"}),
     ("image", {"media": "https://example.com/a.png", "caption": "your parcel"}),
     ("voice", {"media": "T2dnUw==", "mime_type": "audio/ogg"})],
)
def test_echo_of_an_api_send(http: httpx.Client, sim: SimulatorControl,
                             receiver: WebhookReceiver, kind: str, extra: dict[str, Any]) -> None:
    token = new_token()
    sim.set_webhooks(receiver.url, token=token, events=[("messages", "post")])
    message = send_text(http, token, kind=kind, **extra)
    [got] = receiver.wait_for(1)
    [echo] = got.json["messages"]
    assert echo["id"] == message["id"]
    assert (echo["from_me"], echo["source"], echo["type"]) == (True, "api", kind)
    assert echo["status"] == "pending"
    assert echo[kind] == message[kind]
    assert echo["chat_id"] == "15551234567@s.whatsapp.net"
    assert isinstance(echo["timestamp"], int)
    [channel] = sim.channels()
    assert echo["from"] == channel.phone
    assert_webhook_body(got.json)


@pytest.mark.parametrize("echo", ["before", "after"])
def test_echo_before_or_after_the_answer(
        http: httpx.Client, sim: SimulatorControl, receiver: WebhookReceiver, echo: str) -> None:
    token = new_token()
    sim.set_webhooks(receiver.url, token=token, events=[("messages", "post")], echo=echo)
    receiver.answer_delay_s = 0.4  # "before" holds the send's answer that long
    t0 = time.monotonic()
    message = send_text(http, token)
    answered = time.monotonic()
    [got] = receiver.wait_for(1)
    assert got.json["messages"][0]["id"] == message["id"]
    if echo == "before":
        assert got.at <= answered and answered - t0 >= 0.4
    else:
        assert answered - t0 < 0.4


def test_the_control_endpoint_defaults_to_statuses_only(
        http: httpx.Client, sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    # What /_sim/webhooks did before subscriptions existed: no echo, statuses.
    sim.set_webhooks(receiver.url, delays_ms={"sent": 0})
    [config] = sim.webhooks()["webhooks"]
    assert config["token"] is None
    assert config["webhooks"][0]["events"] == [{"type": "statuses", "method": "post"},
                                               {"type": "statuses", "method": "put"}]
    assert (config["callback_backoff_delay_ms"], config["max_callback_backoff_delay_ms"]) == (
        3000, 900000)
    send_text(http, new_token())
    [got] = receiver.wait_for(1)
    assert "statuses" in got.json
    time.sleep(0.1)
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"url": "ftp://x"},
        {"url": "http://x", "mode": "query"},
        {"url": "http://x", "events": [{"type": "nope", "method": "post"}]},
        {"url": "http://x", "events": [{"type": "messages", "method": "get"}]},
        {"url": "http://x", "headers": {f"X-{i}": "v" for i in range(6)}},
        {"url": "http://x", "webhooks": []},
        {},
        {"url": "http://x", "delays_ms": {"seen": 1}},
        {"url": "http://x", "echo": "sometimes"},
        {"url": "http://x", "statuses_method": "patch"},
        {"url": "http://x", "callback_backoff_delay_ms": -1},
        {"url": "http://x", "whatever": 1},
    ],
)
def test_bad_control_config_is_400(http: httpx.Client, sim: SimulatorControl, body: Any) -> None:
    resp = http.post("/_sim/webhooks", json=body)
    assert resp.status_code == 400 and "error" in resp.json()
    assert sim.webhooks()["webhooks"] == []


# -- Whapi's /settings ------------------------------------------------------------------


def test_settings_configure_webhooks_like_whapi(
        http: httpx.Client, sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    auth = {"Authorization": f"Bearer {token}"}
    default = http.get("/settings", headers=auth).json()
    assert default["webhooks"] == []
    assert default["callback_backoff_delay_ms"] == 3000
    assert default["max_callback_backoff_delay_ms"] == 900000
    hook = {"url": f"{receiver.url}/hook", "mode": "method",
            "events": [{"type": "messages", "method": "post"},
                       {"type": "ack", "method": "put"}],  # deprecated name for statuses
            "headers": {"X-Secret": "abc"}}
    resp = http.patch("/settings", headers=auth,
                      json={"webhooks": [hook], "callback_backoff_delay_ms": 5000,
                            "offline_mode": False})
    assert resp.status_code == 200, resp.text
    update = resp.json()
    assert set(update) == {"before_update", "after_update", "changes"}
    # offline_mode is kept but not a change the spec lets Whapi report.
    assert set(update["changes"]) == {"webhooks", "callback_backoff_delay_ms"}
    assert update["after_update"]["offline_mode"] is False
    assert_spec("settings", default)
    assert_spec("settings", update["before_update"])
    assert_spec("settings", update["after_update"])
    assert update["before_update"]["webhooks"] == []
    assert update["after_update"]["webhooks"] == [
        {"url": f"{receiver.url}/hook", "mode": "method", "headers": {"X-Secret": "abc"},
         "events": [{"type": "messages", "method": "post"},
                    {"type": "statuses", "method": "put"}]}]
    assert http.get("/settings", headers=auth).json() == update["after_update"]
    # A PATCH changes only what it names.
    again = http.patch("/settings", headers=auth, json={"max_callback_backoff_delay_ms": 600000})
    assert again.json()["changes"] == ["max_callback_backoff_delay_ms"]
    assert again.json()["after_update"]["webhooks"] == update["after_update"]["webhooks"]

    sim.inbound(token, text="via settings", wait=True)
    sim.status(token, "AbCdEf12-XyZ9876", "read", method="put", wait=True)
    got = receiver.wait_for(2)
    assert [(r.method, r.path) for r in got] == [("POST", "/hook/messages"),
                                                 ("PUT", "/hook/statuses")]
    assert got[0].headers["x-secret"] == "abc"


def test_settings_without_events_subscribe_to_everything(
        http: httpx.Client, sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    auth = {"Authorization": f"Bearer {token}"}
    resp = http.patch("/settings", headers=auth, json={"webhooks": [{"url": receiver.url}]})
    events = [(e["type"], e["method"]) for e in resp.json()["after_update"]["webhooks"][0][
        "events"]]
    assert set(ALL_EVENTS) <= set(events)
    assert resp.json()["after_update"]["webhooks"][0]["mode"] == "body"
    listed = http.get("/settings/events", headers=auth).json()
    assert {(e["type"], e["method"]) for e in listed} == set(events)


@pytest.mark.parametrize(
    "body",
    [
        {"callback_backoff_delay_ms": 100},  # the spec's minimum is 3000
        {"callback_backoff_delay_ms": 20000},
        {"max_callback_backoff_delay_ms": 1000},
        {"webhooks": [{"mode": "body"}]},
        {"webhooks": {"url": "http://x"}},
        {"webhooks": [{"url": "http://x", "mode": "nope"}]},
        [],
    ],
)
def test_bad_settings_are_400(http: httpx.Client, sim: SimulatorControl, body: Any) -> None:
    auth = {"Authorization": f"Bearer {new_token()}"}
    resp = http.patch("/settings", headers=auth, json=body)
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == 400
    assert_spec("error", resp.json())
    assert http.get("/settings", headers=auth).json()["webhooks"] == []


def test_delete_settings_resets_then_409(http: httpx.Client, sim: SimulatorControl) -> None:
    auth = {"Authorization": f"Bearer {new_token()}"}
    http.patch("/settings", headers=auth, json={"webhooks": [{"url": "http://127.0.0.1:9/"}]})
    success = http.delete("/settings", headers=auth).json()
    assert success == {"success": True}
    assert_spec("success", success)
    assert http.get("/settings", headers=auth).json()["webhooks"] == []
    assert http.delete("/settings", headers=auth).status_code == 409


def test_settings_need_a_known_token_in_strict_mode(strict_ctl: SimulatorControl) -> None:
    with httpx.Client(base_url=strict_ctl.base_url, trust_env=False) as c:
        for method in ("GET", "PATCH", "DELETE"):
            resp = c.request(method, "/settings", json={},
                             headers={"Authorization": "Bearer not-registered"})
            assert resp.status_code == 401, method
        assert c.get("/settings").status_code == 401
        token = strict_ctl.register_channel().token
        assert c.get("/settings", headers={"Authorization": f"Bearer {token}"}).status_code == 200
