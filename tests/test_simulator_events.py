"""Events on demand: every kind the simulator injects, posted in Whapi's shape
(checked against tests/whapi_spec when present), with chat ids the way Whapi
writes them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from outbox.providers.simulator.chat_ids import whapi_chat_id
from outbox.providers.simulator.control import Injection, SimulatorControl
from tests.sim_fixtures import WebhookReceiver, assert_webhook_body, new_token

EVERYTHING = [{"type": t, "method": m} for t, m in (
    ("messages", "post"), ("messages", "put"), ("messages", "patch"), ("messages", "delete"),
    ("statuses", "post"), ("statuses", "put"), ("chats", "post"), ("chats", "put"),
    ("chats", "patch"), ("chats", "delete"), ("calls", "post"), ("channel", "post"),
    ("users", "post"), ("users", "delete"))]


@pytest.fixture
def token(sim: SimulatorControl, receiver: WebhookReceiver) -> str:
    """A channel whose webhook (mode body) is subscribed to everything."""
    tok = new_token()
    sim.set_webhooks(token=tok, webhooks=[{"url": receiver.url, "events": EVERYTHING}],
                     callback_backoff_delay_ms=50)
    return tok


def delivered(injection: Injection, receiver: WebhookReceiver) -> dict[str, Any]:
    """The body the receiver got for `injection` (which waited for it)."""
    assert injection.delivered is True
    [got] = receiver.wait_for(1, where=lambda r: r.raw and r.json == injection.body)
    body: dict[str, Any] = got.json
    assert_webhook_body(body)
    assert body["event"] == {"type": injection.event_type, "event": injection.event_method}
    return body


def one_message(injection: Injection, receiver: WebhookReceiver) -> dict[str, Any]:
    body = delivered(injection, receiver)
    [message] = body["messages"]
    assert message["id"] == injection.message_id
    assert isinstance(message["timestamp"], int)
    message_: dict[str, Any] = message
    return message_


# -- inbound messages -------------------------------------------------------------------

MEDIA_TYPES = ["image", "video", "gif", "short", "audio", "voice", "document", "sticker"]
CONTENT_TYPES = [*MEDIA_TYPES, "text", "location", "live_location", "contact", "contact_list",
                 "link_preview", "poll", "interactive", "reply", "system", "product", "order"]


@pytest.mark.parametrize("kind", CONTENT_TYPES)
def test_inbound_of_every_type(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str, kind: str) -> None:
    message = one_message(sim.inbound(token, kind=kind, wait=True), receiver)
    assert (message["type"], message["from_me"], message["source"]) == (kind, False, "mobile")
    assert message["chat_id"] == "15550100200@s.whatsapp.net"
    assert (message["from"], message["from_name"]) == ("15550100200", "Simulated Contact")
    content = message[kind]
    assert isinstance(content, dict) and content
    if kind in MEDIA_TYPES:
        assert {"id", "mime_type", "file_size", "timestamp"} <= set(content)
    if kind in ("text", "link_preview", "system"):
        assert content["body"]
    if kind == "link_preview":
        assert content["title"] and content["url"]
    if kind == "system":
        assert message["subtype"] == "e2e_notification"
    if kind == "poll":
        assert len(content["options"]) >= 2 and len(content["results"]) == len(
            content["options"])


def test_a_call_entry_has_no_content(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    message = one_message(sim.inbound(token, kind="call", wait=True), receiver)
    assert message["type"] == "call" and "call" not in message


@pytest.mark.parametrize(("kind", "key"), [("text", "body"), ("image", "caption"),
                                           ("document", "caption"), ("link_preview", "body"),
                                           ("location", "comment")])
def test_text_is_the_body_or_caption(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str, kind: str, key: str) -> None:
    message = one_message(sim.inbound(token, kind=kind, text="look here", wait=True), receiver)
    assert message[kind][key] == "look here"


def test_given_content_replaces_the_generated_one(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    content = {"body": "custom", "buttons": [{"type": "quick_reply", "title": "A", "id": "a"}]}
    message = one_message(sim.inbound(token, content=content, message_id="AbCdEf12-Given01",
                                      timestamp=1767261600, wait=True), receiver)
    assert message["text"] == content
    assert (message["id"], message["timestamp"]) == ("AbCdEf12-Given01", 1767261600)


@pytest.mark.parametrize(
    ("phone", "chat_id"),
    [
        ("+52 55 1234 5678", "5215512345678@s.whatsapp.net"),  # Mexico: 52 -> 521
        ("5215512345678", "5215512345678@s.whatsapp.net"),
        ("+54 11 2345 6789", "5491123456789@s.whatsapp.net"),  # Argentina: 54 -> 549
        ("+54 9 11 2345 6789", "5491123456789@s.whatsapp.net"),
        ("+55 31 98765 4321", "553187654321@s.whatsapp.net"),  # Brazil, area 31: no 9th digit
        ("+55 11 8765 4321", "5511987654321@s.whatsapp.net"),  # Brazil, area 11: the 9 added
        ("+55 11 98765 4321", "5511987654321@s.whatsapp.net"),
        ("+55 31 3456 7890", "553134567890@s.whatsapp.net"),  # a landline: untouched
        ("+1 555 010 0200", "15550100200@s.whatsapp.net"),
        ("+44 7700 900123", "447700900123@s.whatsapp.net"),
    ],
)
def test_country_rules(phone: str, chat_id: str) -> None:
    assert whapi_chat_id(phone) == chat_id


def test_chat_ids_pass_through_and_rules_can_be_off() -> None:
    assert whapi_chat_id("525512345678@s.whatsapp.net") == "525512345678@s.whatsapp.net"
    assert whapi_chat_id("183729465018273@lid") == "183729465018273@lid"
    assert whapi_chat_id("+52 55 1234 5678", country_rules=False) == (
        "525512345678@s.whatsapp.net")


def test_inbound_from_a_country_rule_number(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    message = one_message(sim.inbound(token, phone="+52 55 1234 5678", wait=True), receiver)
    assert message["chat_id"] == "5215512345678@s.whatsapp.net"
    assert message["from"] == "5215512345678"


def test_inbound_from_a_lid(sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    message = one_message(sim.inbound(token, chat_id="183729465018273@lid", sender_name="Dana",
                                      wait=True), receiver)
    assert (message["chat_id"], message["from"], message["from_name"]) == (
        "183729465018273@lid", "183729465018273", "Dana")


def test_inbound_in_a_group(sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    message = one_message(sim.inbound(
        token, chat_id="120363041234567890@g.us", sender="447700900123", sender_name="Alice",
        chat_name="Pickups", wait=True), receiver)
    assert message["chat_id"] == "120363041234567890@g.us"
    assert (message["from"], message["from_name"], message["chat_name"]) == (
        "447700900123", "Alice", "Pickups")


def test_a_message_typed_on_the_phone(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    message = one_message(sim.inbound(token, from_me=True, text="On my way", wait=True),
                          receiver)
    [channel] = [c for c in sim.channels() if c.token == token]
    assert (message["from_me"], message["source"]) == (True, "mobile")
    assert (message["from"], message["from_name"]) == (channel.phone, channel.name)
    assert message["chat_id"] == "15550100200@s.whatsapp.net"


def test_an_offline_backlog_is_one_put_with_several_messages(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    injected = sim.inbound_many(token, [
        {"text": "Are you open tomorrow?", "timestamp": 1767254400},
        {"text": "Hello?", "timestamp": 1767254500},
        {"phone": "+52 55 1234 5678", "text": "¿Hacen envíos?"},
    ], method="put", wait=True)
    body = delivered(injected, receiver)
    assert body["event"] == {"type": "messages", "event": "put"}
    assert [m["text"]["body"] for m in body["messages"]] == [
        "Are you open tomorrow?", "Hello?", "¿Hacen envíos?"]
    assert [m["id"] for m in body["messages"]] == injected.message_ids
    assert body["messages"][2]["chat_id"] == "5215512345678@s.whatsapp.net"


def test_a_quote_points_at_the_quoted_message(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    first = sim.inbound(token, text="first")
    message = one_message(sim.inbound(token, text="reply", quoted=first.message_id, wait=True),
                          receiver)
    context = message["context"]
    assert (context["quoted_id"], context["quoted_type"]) == (first.message_id, "text")
    assert context["quoted_content"] == {"body": "first"}


def test_injected_messages_are_readable_through_whapi(
        sim_url: str, sim: SimulatorControl, token: str) -> None:
    injected = sim.inbound(token, text="hello")
    with httpx.Client(base_url=sim_url, trust_env=False) as c:
        auth = {"Authorization": f"Bearer {token}"}
        assert c.get(f"/messages/{injected.message_id}", headers=auth).json() == (
            injected.body["messages"][0])
        other = {"Authorization": f"Bearer {new_token()}"}
        assert c.get(f"/messages/{injected.message_id}", headers=other).status_code == 404


# -- actions, updates, removals ---------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "kwargs", "expected"),
    [
        ("reaction", {"emoji": "👍"}, {"emoji": "👍"}),
        ("reaction", {"emoji": ""}, {"emoji": ""}),  # an empty emoji removes the reaction
        ("edit", {"text": "new text"}, {"edited_type": "text",
                                        "edited_content": {"body": "new text"}}),
        ("edited", {"text": "new text"}, {"edited_type": "text",
                                          "edited_content": {"body": "new text"}}),
        ("delete", {}, {}),
        ("pin", {}, {}),
        ("unpin", {}, {}),
        ("ephemeral", {"ephemeral": 86400}, {"ephemeral": 86400}),
        ("comment", {"comment": "Nice"}, {"comment": "Nice"}),
    ],
)
def test_actions_on_a_message(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str, action: str,
        kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    target = sim.inbound(token, phone="447700900123", text="original")
    message = one_message(sim.action(token, target.message_id, action, wait=True, **kwargs),
                          receiver)
    assert message["type"] == "action"
    assert message["chat_id"] == "447700900123@s.whatsapp.net"  # the target's chat
    assert message["action"] == {"target": target.message_id, "type": action, **expected}
    assert (message["from"], message["from_me"]) == ("447700900123", False)


def test_a_vote_names_a_poll_option(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    poll = sim.inbound(token, kind="poll")
    options = poll.body["messages"][0]["poll"]["options"]
    message = one_message(sim.action(token, poll.message_id, "vote", votes=[options[1]],
                                     wait=True), receiver)
    assert message["action"] == {"target": poll.message_id, "type": "vote",
                                 "votes": [options[1]]}


def test_an_event_response(sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    message = one_message(sim.action(token, "ZLUbsQkyLWvMykSS-qd2Xq7Lm2R", "event_response",
                                     chat_id="120363041234567890@g.us",
                                     sender="447700900123", wait=True), receiver)
    response = message["action"]["event_response"]
    assert (response["participant"], response["response"]) == ("447700900123", "GOING")


def test_a_reaction_from_the_phone_on_our_send(
        sim_url: str, sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    with httpx.Client(base_url=sim_url, trust_env=False) as c:
        sent = c.post("/messages/text", json={"to": "15551234567", "body": "hi"},
                      headers={"Authorization": f"Bearer {token}"}).json()["message"]
    message = one_message(sim.action(token, sent["id"], "reaction", emoji="❤️", from_me=True,
                                     wait=True), receiver)
    assert message["chat_id"] == "15551234567@s.whatsapp.net"
    assert message["from_me"] is True and message["action"]["target"] == sent["id"]


def test_messages_updates(sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    original = sim.inbound(token, text="where is order #1042?")
    body = delivered(sim.message_update(token, original.message_id, text="where is #1043?",
                                        wait=True), receiver)
    [update] = body["messages_updates"]
    assert update["id"] == original.message_id
    assert update["before_update"]["text"] == {"body": "where is order #1042?"}
    assert update["after_update"]["text"] == {"body": "where is #1043?"}
    assert update["after_update"]["id"] == update["before_update"]["id"] == original.message_id
    assert update["changes"] == ["text"]
    trigger = update["trigger"]
    assert trigger["type"] == "action" and trigger["action"]["target"] == original.message_id
    assert trigger["action"]["edited_content"] == {"body": "where is #1043?"}
    # The simulator now holds the edited text.
    second = delivered(sim.message_update(token, original.message_id, text="third",
                                          trigger=False, wait=True), receiver)
    [update] = second["messages_updates"]
    assert update["before_update"]["text"] == {"body": "where is #1043?"}
    assert "trigger" not in update


def test_an_update_of_an_unknown_message(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    body = delivered(sim.message_update(token, "Unknown1234-Abcdef", text="x", wait=True),
                     receiver)
    assert body["messages_updates"][0]["before_update"]["id"] == "Unknown1234-Abcdef"


def test_messages_removed(sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    ids = ["AbCdEf12-XyZ98761", "AbCdEf12-XyZ98762"]
    body = delivered(sim.messages_removed(token, ids, wait=True), receiver)
    assert body["messages_removed"] == ids and "messages_removed_all" not in body
    body = delivered(sim.messages_removed(token, ids[:1], all_in_chat="447700900123@s.whatsapp.net",
                                          wait=True), receiver)
    assert body["messages_removed_all"] == "447700900123@s.whatsapp.net"


# -- statuses, calls, chats, channel, users ----------------------------------------------


@pytest.mark.parametrize(("status", "code"), [("failed", 0), ("pending", 1), ("sent", 2),
                                              ("delivered", 3), ("read", 4), ("played", 5),
                                              ("deleted", 6)])
@pytest.mark.parametrize("method", ["post", "put"])
def test_statuses(sim: SimulatorControl, receiver: WebhookReceiver, token: str, status: str,
                  code: int, method: str) -> None:
    body = delivered(sim.status(token, ["AbCdEf12-XyZ98761", "AbCdEf12-XyZ98762"], status,
                                method=method, wait=True), receiver)
    entries = body["statuses"]
    assert [e["id"] for e in entries] == ["AbCdEf12-XyZ98761", "AbCdEf12-XyZ98762"]
    for e in entries:
        assert (e["status"], e["code"]) == (status, code)
        assert isinstance(e["timestamp"], str) and e["timestamp"].isdigit()
        assert ("errors" in e) == (status == "failed")


def test_a_status_names_the_message_chat_and_viewer(
        sim_url: str, sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    with httpx.Client(base_url=sim_url, trust_env=False) as c:
        sent = c.post("/messages/text", json={"to": "120363041234567890@g.us", "body": "hi"},
                      headers={"Authorization": f"Bearer {token}"}).json()["message"]
    body = delivered(sim.status(token, sent["id"], "read", viewer_id="447700900123",
                                errors=[{"code": 1, "message": "x"}], wait=True), receiver)
    [entry] = body["statuses"]
    assert entry["recipient_id"] == "120363041234567890@g.us"
    assert entry["viewer_id"] == "447700900123"
    assert entry["errors"] == [{"code": 1, "message": "x"}]


@pytest.mark.parametrize("status", ["initiated", "ringing", "missed", "canceled", "answered"])
def test_calls(sim: SimulatorControl, receiver: WebhookReceiver, token: str, status: str) -> None:
    body = delivered(sim.call(token, phone="447700900123", status=status, video=True, wait=True),
                     receiver)
    [call] = body["calls"]
    assert call["status"] == status
    assert call["chat_id"] == call["from"] == "447700900123@s.whatsapp.net"
    assert (call["video_call"], call["group_call"], call["offline_call"]) == (True, False, False)
    assert isinstance(call["timestamp"], int) and call["timestamp"] > 10**12  # milliseconds
    assert call["id"]


def test_a_group_call(sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    body = delivered(sim.call(token, chat_id="120363041234567890@g.us", wait=True), receiver)
    assert body["calls"][0]["group_call"] is True


def test_chats_post_patch_delete(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    body = delivered(sim.chat(token, phone="447700900123", name="Alice", unread=1, wait=True),
                     receiver)
    [chat] = body["chats"]
    assert (chat["id"], chat["type"], chat["name"], chat["unread"]) == (
        "447700900123@s.whatsapp.net", "contact", "Alice", 1)
    body = delivered(sim.chat(token, method="patch", phone="447700900123", archive=True,
                              wait=True), receiver)
    [update] = body["chats_updates"]
    assert update["before_update"]["archive"] is False
    assert update["after_update"]["archive"] is True
    assert update["changes"] == ["archive"]
    assert update["before_update"]["id"] == update["after_update"]["id"]
    body = delivered(sim.chat(token, method="delete", chat_id="120363041234567890@g.us",
                              wait=True), receiver)
    assert body["chats_removed"] == ["120363041234567890@g.us"]
    group = delivered(sim.chat(token, chat_id="120363041234567890@g.us", wait=True), receiver)
    assert group["chats"][0]["type"] == "group"


@pytest.mark.parametrize(("status", "code"), [("NOT_INIT", 0), ("INIT", 1), ("LAUNCH", 2),
                                              ("QR", 3), ("AUTH", 4), ("ERROR", 5),
                                              ("SYNC_ERROR", 6)])
def test_channel_health(sim: SimulatorControl, receiver: WebhookReceiver, token: str,
                        status: str, code: int) -> None:
    body = delivered(sim.channel_health(token, status, wait=True), receiver)
    health = body["health"]
    assert health["status"] == {"code": code, "text": status}
    assert isinstance(health["start_at"], int) and isinstance(health["uptime"], int)
    assert body["channel_id"] == health["channel_id"]
    assert ("user" in health) == (status == "AUTH")


def test_users_login_and_logout(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    out = delivered(sim.logout(token, wait=True), receiver)
    [channel] = [c for c in sim.channels() if c.token == token]
    assert out["user"] == {"id": channel.phone, "name": channel.name}
    assert out["event"] == {"type": "users", "event": "delete"}
    back = delivered(sim.login(token, wait=True), receiver)
    assert back["event"] == {"type": "users", "event": "post"}


def test_channel_id_comes_from_the_channel_or_the_config(
        sim: SimulatorControl, receiver: WebhookReceiver) -> None:
    registered = sim.register_channel(channel_id="ORBITA-K7Q2P")
    sim.set_webhooks(receiver.url, token=registered.token, events=[("messages", "post")])
    assert sim.inbound(registered.token).body["channel_id"] == "ORBITA-K7Q2P"
    sim.set_webhooks(receiver.url, token=registered.token, events=[("messages", "post")],
                     channel_id="OTHER-12345")
    assert sim.inbound(registered.token).body["channel_id"] == "OTHER-12345"
    assert sim.inbound(None).body["channel_id"] == "SIMULATOR"


# -- raw ------------------------------------------------------------------------------


def test_raw_json_is_posted_as_given(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    odd = {"messages": [{"id": 5, "type": None}], "event": "nope"}
    injected = sim.raw(token, "messages", "post", body=odd, wait=True)
    assert injected.delivered is True and injected.body == odd
    [got] = receiver.wait_for(1)
    assert got.json == odd


def test_raw_bytes_are_posted_byte_for_byte(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    injected = sim.raw(token, "statuses", "put", raw='{"statuses": [', wait=True)
    assert injected.delivered is True
    [got] = receiver.wait_for(1)
    assert got.raw == b'{"statuses": ['


# -- the injection API itself ------------------------------------------------------------


def test_without_a_subscriber_nothing_is_delivered(sim: SimulatorControl) -> None:
    injected = sim.inbound(new_token(), text="nobody listens", wait=True)
    assert injected.deliveries == [] and injected.delivered is False
    assert injected.body["messages"][0]["text"] == {"body": "nobody listens"}
    assert sim.inbound(new_token()).delivered is None


def test_wait_gives_up_after_its_timeout(
        sim: SimulatorControl, receiver: WebhookReceiver, token: str) -> None:
    receiver.default_status = 503
    injected = sim.inbound(token, wait=True, wait_timeout_s=0.3)
    assert injected.delivered is False and len(injected.deliveries) == 1


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/_sim/inbound", {"type": "telegram"}),
        ("/_sim/inbound", {"method": "patch"}),
        ("/_sim/inbound", {"bogus": 1}),
        ("/_sim/inbound", {"content": "text"}),
        ("/_sim/inbound", {"messages": []}),
        ("/_sim/inbound", {"timestamp": "today"}),
        ("/_sim/inbound", {"wait": True, "wait_timeout_s": 1000}),
        ("/_sim/action", {"action": "reaction"}),
        ("/_sim/action", {"target": "AbCdEf12-XyZ9876", "action": "like"}),
        ("/_sim/action", {"target": "AbCdEf12-XyZ9876", "action": "vote", "votes": "A"}),
        ("/_sim/messages_updates", {}),
        ("/_sim/messages_removed", {"ids": []}),
        ("/_sim/statuses", {"id": "AbCdEf12-XyZ9876", "status": "seen"}),
        ("/_sim/statuses", {"id": "AbCdEf12-XyZ9876", "status": "read", "method": "patch"}),
        ("/_sim/calls", {"status": "hung"}),
        ("/_sim/chats", {"method": "get"}),
        ("/_sim/chats", {"archive": "yes"}),
        ("/_sim/channel", {"status": "AUTH"}),  # no token
        ("/_sim/users", {"method": "delete"}),  # no token
        ("/_sim/raw", {"type": "messages"}),
        ("/_sim/raw", {"body": {}}),
    ],
)
def test_bad_injections_are_400(sim_url: str, sim: SimulatorControl, path: str,
                                body: dict[str, Any]) -> None:
    with httpx.Client(base_url=sim_url, trust_env=False) as c:
        resp = c.post(path, json=body)
        assert resp.status_code == 400, resp.text
        assert "error" in resp.json()
        assert c.post(path, content=b"[1]").status_code == 400
        assert c.post(path, content=b"{").status_code == 400


def test_an_unknown_token_is_refused_in_strict_mode(strict_ctl: SimulatorControl) -> None:
    with httpx.Client(base_url=strict_ctl.base_url, trust_env=False) as c:
        resp = c.post("/_sim/inbound", json={"token": "nobody"})
        assert resp.status_code == 400 and "register" in resp.json()["error"]
    token = strict_ctl.register_channel().token
    assert strict_ctl.inbound(token).body["channel_id"].startswith("SIMUL-")
