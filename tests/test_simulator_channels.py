"""The simulator's channels and the Whapi answers that depend on them: unknown
tokens, logged-out channels, media ids, messages by id, forwards."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from outbox.providers.simulator.control import SimulatorControl
from tests.sim_fixtures import WebhookReceiver, assert_spec, new_token

TEXT = {"to": "15551234567", "body": "hi"}


@pytest.fixture
def http(sim_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim_url, timeout=10.0, trust_env=False) as c:
        yield c


@pytest.fixture
def strict_http(strict_ctl: SimulatorControl) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=strict_ctl.base_url, timeout=10.0, trust_env=False) as c:
        yield c


def send(http: httpx.Client, token: str, kind: str = "text",
         body: dict[str, Any] | None = None) -> httpx.Response:
    return http.post(f"/messages/{kind}", json=TEXT if body is None else body,
                     headers={"Authorization": f"Bearer {token}"})


def error_of(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    err: dict[str, Any] = resp.json()["error"]
    assert err["code"] == status
    assert_spec("error", resp.json())
    return err


# -- token modes ----------------------------------------------------------------------


def test_strict_mode_refuses_unknown_tokens(
        strict_http: httpx.Client, strict_ctl: SimulatorControl) -> None:
    assert strict_ctl.token_policy() == (False, 401)
    error_of(send(strict_http, new_token()), 401)
    assert strict_ctl.sent() == []
    stats = strict_ctl.stats()
    assert stats.rejected == {401: 1} and stats.tokens == {}  # no counters for strangers
    assert strict_ctl.channels() == []
    error_of(strict_http.get("/health", headers={"Authorization": "Bearer x"}), 401)


def test_a_registered_token_works(strict_http: httpx.Client, strict_ctl: SimulatorControl) -> None:
    channel = strict_ctl.register_channel("my-token-0123", channel_id="ORBITA-K7Q2P",
                                          phone="+1 415 555 0123", name="Orbita Store")
    assert (channel.token, channel.channel_id, channel.phone, channel.name, channel.status,
            channel.auto) == ("my-token-0123", "ORBITA-K7Q2P", "14155550123", "Orbita Store",
                              "AUTH", False)
    assert send(strict_http, "my-token-0123").status_code == 200
    assert [r.token for r in strict_ctl.sent()] == ["my-token-0123"]
    assert "my-token-0123" not in repr(channel)
    health = strict_http.get("/health", headers={"Authorization": "Bearer my-token-0123"}).json()
    assert health["channel_id"] == "ORBITA-K7Q2P"
    assert health["status"] == {"code": 4, "text": "AUTH"}
    assert health["user"] == {"id": "14155550123", "name": "Orbita Store"}
    assert_spec("health", health)


def test_registering_without_a_token_makes_one(
        strict_http: httpx.Client, strict_ctl: SimulatorControl) -> None:
    a, b = strict_ctl.register_channel(), strict_ctl.register_channel()
    assert a.token != b.token and len(a.token) == 32
    assert a.channel_id != b.channel_id and a.channel_id.startswith("SIMUL-")
    assert send(strict_http, a.token).status_code == 200
    assert {c.token for c in strict_ctl.channels()} == {a.token, b.token}
    strict_ctl.remove_channel(a.token)
    error_of(send(strict_http, a.token), 401)


def test_unknown_tokens_can_answer_404(
        strict_http: httpx.Client, strict_ctl: SimulatorControl) -> None:
    # Whapi's own tooling documents 404 "Channel not found" for a bad token.
    strict_ctl.set_token_policy(unknown_token_status=404)
    err = error_of(send(strict_http, new_token()), 404)
    assert err["message"] == "Channel not found"
    strict_ctl.reset()  # back to the start-up policy
    assert strict_ctl.token_policy() == (False, 401)


def test_accept_any_token_mode_registers_on_first_use(
        http: httpx.Client, sim: SimulatorControl) -> None:
    assert sim.token_policy() == (True, 401)
    token = new_token()
    assert send(http, token).status_code == 200
    [channel] = sim.channels()
    assert channel.token == token and channel.auto and channel.status == "AUTH"
    assert send(http, token).status_code == 200
    assert len(sim.channels()) == 1
    sim.set_token_policy(accept_any_token=False)
    error_of(send(http, new_token()), 401)
    assert send(http, token).status_code == 200  # already a channel
    sim.reset()
    assert sim.token_policy() == (True, 401) and sim.channels() == []


@pytest.mark.parametrize(
    "body",
    [{"token": "has space"}, {"token": 5}, {"phone": "12"}, {"status": "ONLINE"},
     {"name": ""}, {"nonsense": 1}],
)
def test_bad_registrations_are_400(http: httpx.Client, sim: SimulatorControl, body: Any) -> None:
    assert http.post("/_sim/channels", json=body).status_code == 400
    assert sim.channels() == []


@pytest.mark.parametrize("body", [{"accept_any_token": "yes"}, {"unknown_token_status": 403},
                                  {"other": 1}])
def test_bad_token_policies_are_400(http: httpx.Client, sim: SimulatorControl, body: Any) -> None:
    assert http.patch("/_sim/channels", json=body).status_code == 400
    assert sim.token_policy() == (True, 401)


# -- logged in or not --------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True])
def test_logout_makes_sends_401_until_login(
        http: httpx.Client, strict_http: httpx.Client, sim: SimulatorControl,
        strict_ctl: SimulatorControl, strict: bool) -> None:
    client, control = (strict_http, strict_ctl) if strict else (http, sim)
    token = control.register_channel().token
    assert send(client, token).status_code == 200
    control.logout(token)
    err = error_of(send(client, token), 401)
    assert err["message"] == "Channel needs authorization"
    assert [c.status for c in control.channels()] == ["QR"]
    health = client.get("/health", headers={"Authorization": f"Bearer {token}"}).json()
    assert health["status"] == {"code": 3, "text": "QR"} and "user" not in health
    control.login(token)
    assert send(client, token).status_code == 200
    assert len(control.sent(token=token)) == 2
    assert control.stats().tokens[token].rejected == {401: 1}


@pytest.mark.parametrize("status", ["QR", "ERROR", "SYNC_ERROR", "LAUNCH"])
def test_a_channel_not_in_auth_cannot_send(
        http: httpx.Client, sim: SimulatorControl, status: str) -> None:
    token = new_token()
    sim.channel_health(token, status)
    error_of(send(http, token), 401)
    sim.channel_health(token, "AUTH")
    assert send(http, token).status_code == 200


def test_health_without_a_token_is_a_probe(http: httpx.Client, sim: SimulatorControl) -> None:
    data = http.get("/health").json()
    assert data["status"] == {"code": 4, "text": "AUTH"}
    assert isinstance(data["start_at"], int) and isinstance(data["uptime"], int)


# -- media ids ---------------------------------------------------------------------------


def test_an_unknown_media_id_is_404_on_media_endpoints(
        http: httpx.Client, sim: SimulatorControl) -> None:
    token = new_token()
    for kind in ("image", "video", "document", "audio", "voice", "sticker", "gif", "short"):
        err = error_of(send(http, token, kind, {"to": "15551234567",
                                                "media": "jpeg-0123456789abcdef"}), 404)
        assert err["message"] == "Media with specified id not found"
    assert sim.sent() == []
    assert sim.stats().rejected == {404: 8}
    # Other messages of the channel flow meanwhile.
    assert send(http, token).status_code == 200


def test_known_media_ids_work(http: httpx.Client, sim: SimulatorControl) -> None:
    token = new_token()
    inbound = sim.inbound(token, kind="image")
    media_id = inbound.body["messages"][0]["image"]["id"]
    resp = send(http, token, "image", {"to": "15551234567", "media": media_id})
    assert resp.status_code == 200
    assert resp.json()["message"]["image"]["id"] == media_id
    # A media sent by URL gets an id, which a later send may use.
    first = send(http, token, "document", {"to": "15551234567",
                                           "media": "https://example.com/a.pdf"}).json()
    doc_id = first["message"]["document"]["id"]
    assert send(http, token, "document", {"to": "15551234567", "media": doc_id}).status_code == 200
    # base64 is not an id.
    assert send(http, token, "voice", {"to": "15551234567", "media": "T2dnUw==",
                                       "mime_type": "audio/ogg"}).status_code == 200


def test_media_not_found_fault(http: httpx.Client, sim: SimulatorControl) -> None:
    token = new_token()
    sim.set_faults(token=token, media_not_found_rate=1.0)
    error_of(send(http, token, "image", {"to": "15551234567",
                                         "media": "https://example.com/a.png"}), 404)
    assert send(http, token).status_code == 200  # text has no media to miss
    assert send(http, new_token(), "image", {"to": "15551234567",
                                             "media": "https://example.com/a.png"}
                ).status_code == 200


# -- more send endpoints -------------------------------------------------------------------

GOOD = {
    "sticker": {"media": "https://example.com/s.webp"},
    "link_preview": {"body": "see https://example.com", "title": "Example"},
    "live_location": {"latitude": 52.5, "longitude": 13.4},
    "contact_list": {"list": [{"name": "A", "vcard": "BEGIN:VCARD\nEND:VCARD"}]},
    "poll": {"title": "Slot?", "options": ["AM", "PM"]},
    "interactive": {"action": {"buttons": [{"type": "quick_reply", "title": "Y", "id": "y"}]},
                    "body": {"text": "ok?"}},
    "carousel": {"cards": [{"id": "c1", "media": "https://example.com/a.png", "buttons": []}]},
}


@pytest.mark.parametrize("kind", list(GOOD))
def test_more_send_endpoints(http: httpx.Client, sim: SimulatorControl, kind: str) -> None:
    resp = send(http, new_token(), kind, {"to": "15551234567", **GOOD[kind]})
    assert resp.status_code == 200, resp.text
    assert_spec("sent_message", resp.json())
    assert resp.json()["message"]["type"] == kind
    assert [r.type for r in sim.sent()] == [kind]


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("sticker", {}, "media"),
        ("link_preview", {"body": "x"}, "title"),
        ("live_location", {"latitude": 1}, "longitude"),
        ("contact_list", {"list": []}, "list"),
        ("poll", {"title": "x", "options": ["only one"]}, "options"),
        ("poll", {"title": "x"}, "options"),
        ("interactive", {"action": "buttons"}, "action"),
        ("carousel", {"cards": {}}, "cards"),
    ],
)
def test_more_send_endpoints_validate(http: httpx.Client, kind: str, body: dict[str, Any],
                                      field: str) -> None:
    err = error_of(send(http, new_token(), kind, {"to": "15551234567", **body}), 400)
    assert f"'{field}'" in err["details"]


# -- messages by id ----------------------------------------------------------------------


def test_mark_read_and_delete(
        http: httpx.Client, sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    token = new_token()
    everything = [(t, m) for t in ("messages", "statuses", "chats") for m in
                  ("post", "put", "patch", "delete")]
    sim.set_webhooks(receiver.url, token=token, events=everything, echo="none", delays_ms={})
    inbound = sim.inbound(token, text="hello", wait=True)
    receiver.wait_for(1)
    auth = {"Authorization": f"Bearer {token}"}
    mid = inbound.message_id
    assert http.put(f"/messages/{mid}", headers=auth).json() == {"success": True}
    assert_spec("success", http.put(f"/messages/{mid}", headers=auth).json())
    assert http.delete(f"/messages/{mid}", headers=auth).json() == {"success": True}
    assert http.get(f"/messages/{mid}", headers=auth).json()["status"] == "deleted"
    for method in ("PUT", "DELETE", "GET"):
        err = error_of(http.request(method, "/messages/Unknown123-Abcdef", headers=auth), 404)
        assert err["message"] == "Specified message not found"
        error_of(http.request(method, f"/messages/{mid}",
                              headers={"Authorization": f"Bearer {new_token()}"}), 404)
        error_of(http.request(method, f"/messages/{mid}"), 401)
    sim.logout(token)
    error_of(http.put(f"/messages/{mid}", headers=auth), 401)
    assert len(receiver.requests) == 1  # mark-read and delete emit nothing


def test_forward_a_message(http: httpx.Client, sim: SimulatorControl) -> None:
    token = new_token()
    original = send(http, token).json()["message"]
    resp = http.post(f"/messages/{original['id']}", json={"to": "15557654321"},
                     headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.text
    forwarded = resp.json()["message"]
    assert forwarded["id"] != original["id"]
    assert forwarded["text"] == original["text"]
    assert forwarded["chat_id"] == "15557654321@s.whatsapp.net"
    assert [r.chat_id for r in sim.sent()] == ["15551234567@s.whatsapp.net",
                                               "15557654321@s.whatsapp.net"]
    # Another channel can't forward it; a bad `to` is a 400.
    error_of(http.post(f"/messages/{original['id']}", json={"to": "15557654321"},
                       headers={"Authorization": f"Bearer {new_token()}"}), 404)
    error_of(http.post(f"/messages/{original['id']}", json={"to": "+1"},
                       headers={"Authorization": f"Bearer {token}"}), 400)
