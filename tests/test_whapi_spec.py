"""Checked against Whapi's published spec (issue 12, item 6).

The schemas in tests/whapi_spec were written from Whapi's OpenAPI
description 1.8.7, not from our code, so these tests hold the corpus of
webhook bodies, the requests our real client sends and the simulator's
answers to Whapi's word: client, simulator and parser cannot drift together.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from outbox.errors import InvalidMessage
from outbox.message_types import MediaMessage, NewMessage, TextMessage, prepare
from outbox.providers.base import MESSAGE_TYPES, Outcome, OutgoingMessage
from outbox.providers.simulator.control import SimulatorControl
from outbox.providers.whapi import WhapiClient
from tests.sim_fixtures import new_token
from tests.whapi_spec import (
    BASE_URI,
    PAYLOAD_DIR,
    REQUEST_SCHEMAS,
    SCHEMA_DIR,
    WEBHOOK_SCHEMA,
    assert_valid,
    dangling_references,
    declared_properties,
    errors,
    load_payload,
    payload_names,
    validator,
)

Body = dict[str, Any]


# -- the schemas themselves -------------------------------------------------------


@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_schema_file_is_draft_2020_12_and_cites_the_spec(path: Any) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"{BASE_URI}{path.name}"
    assert "OpenAPI description 1.8.7" in schema["$comment"]


def test_every_reference_resolves() -> None:
    # jsonschema resolves a $ref only when an instance reaches it: find a
    # dangling one here rather than in some later, unrelated failure.
    assert dangling_references() == []


def test_unknown_or_definitions_only_name_is_refused() -> None:
    for name in ("nope", "ids", "props"):
        with pytest.raises(KeyError, match="no Whapi schema named"):
            validator(name)


def test_senders_declare_the_spec_fields() -> None:
    # Spot checks that the composition (allOf/$ref) reached the spec's parts.
    assert declared_properties("sender_text") >= {
        "to", "body", "quoted", "edit", "typing_time", "no_link_preview", "mentions"}
    assert declared_properties("sender_document") >= {"to", "media", "filename", "caption"}
    assert "caption" not in declared_properties("sender_audio")
    assert "caption" not in declared_properties("sender_voice")
    assert declared_properties("message", "/$defs/MessageAction") >= {
        "target", "type", "emoji", "edited_content", "votes"}


# -- the corpus ----------------------------------------------------------------------


@pytest.mark.parametrize("name", payload_names())
def test_corpus_payload_matches_the_spec(name: str) -> None:
    assert_valid(WEBHOOK_SCHEMA, load_payload(name))


def test_corpus_readme_describes_every_file() -> None:
    readme = (PAYLOAD_DIR / "README.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `([a-z0-9_]+)\.json` \|", readme, flags=re.MULTILINE)
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert sorted(listed) == payload_names()


def _corpus() -> Iterator[tuple[str, Body]]:
    for name in payload_names():
        yield name, load_payload(name)


def _enum(name: str, pointer: str) -> list[str]:
    schema = json.loads((SCHEMA_DIR / f"{name}.json").read_text(encoding="utf-8"))
    node: Any = schema
    for part in pointer.strip("/").split("/"):
        node = node[part]
    return list(node["enum"])


def test_corpus_covers_every_action_status_and_event_kind_we_route() -> None:
    actions = {m["action"]["type"] for _, b in _corpus() for m in b.get("messages", [])
               if m["type"] == "action"}
    assert actions == set(_enum("message", "/$defs/MessageAction/properties/type"))

    statuses = {s["status"] for _, b in _corpus() for s in b.get("statuses", [])}
    assert statuses == set(_enum("status", "/$defs/StatusEnum")) - {"pending"}

    kinds = {(b["event"]["type"], b["event"]["event"]) for _, b in _corpus()}
    routed = {("messages", "post"), ("messages", "put"), ("messages", "patch"),
              ("messages", "delete"), ("statuses", "post"), ("statuses", "put"),
              ("chats", "post"), ("chats", "patch"), ("chats", "delete"),
              ("channel", "post"), ("users", "post"), ("users", "delete")}
    assert routed <= kinds
    assert kinds - routed, "the corpus needs an event kind we don't route"

    health = {b["health"]["status"]["text"] for _, b in _corpus() if "health" in b}
    assert health >= {"QR", "AUTH", "ERROR"}


def test_corpus_uses_the_spec_timestamp_types() -> None:
    for name, body in _corpus():
        for message in body.get("messages", []):
            assert isinstance(message["timestamp"], int), name
        for status in body.get("statuses", []):
            assert re.fullmatch(r"\d{10}", status["timestamp"]), name


def test_corpus_chat_ids_cover_whapis_routing_rules() -> None:
    chats = {m["chat_id"] for _, b in _corpus() for m in b.get("messages", [])}
    assert any(re.fullmatch(r"521\d{10}@s\.whatsapp\.net", c) for c in chats)  # Mexico
    assert any(re.fullmatch(r"549\d{10}@s\.whatsapp\.net", c) for c in chats)  # Argentina
    assert "553187654321@s.whatsapp.net" in chats  # Brazil, area 31, 8-digit subscriber
    assert "5511987654321@s.whatsapp.net" in chats  # Brazil, area 11, 9 digits
    assert any(c.endswith("@lid") for c in chats)
    assert any(c.endswith("@g.us") for c in chats)
    assert any(c.endswith("@newsletter") for c in chats)
    story = load_payload("chats_patch_story")["chats_updates"][0]["after_update"]
    assert story["id"] == "status@broadcast"


# -- the schemas can fail --------------------------------------------------------------

Mutation = Callable[[Body], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(body: Body) -> None:
        *parents, last = _parse(path)
        node: Any = body
        for key in parents:
            node = node[key]
        node[last] = value
    return mutate


def _del(path: str) -> Mutation:
    def mutate(body: Body) -> None:
        *parents, last = _parse(path)
        node: Any = body
        for key in parents:
            node = node[key]
        del node[last]
    return mutate


def _parse(path: str) -> list[str | int]:
    return [int(p) if p.isdigit() else p for p in path.split(".")]


# (corpus file, mutation, JSON path of the expected error, words in its message)
WEBHOOK_BREAKAGES: list[tuple[str, str, Mutation, str, str]] = [
    ("no-timestamp", "messages_post_text", _del("messages.0.timestamp"),
     "$.messages[0]", "'timestamp' is a required property"),
    ("no-from_me", "messages_post_text", _del("messages.0.from_me"),
     "$.messages[0]", "'from_me' is a required property"),
    ("timestamp-as-string", "messages_post_text", _set("messages.0.timestamp", "1767261600"),
     "$.messages[0].timestamp", "is not of type 'number'"),
    ("unknown-type", "messages_post_text", _set("messages.0.type", "chat"),
     "$.messages[0].type", "is not one of"),
    ("unknown-source", "messages_post_text", _set("messages.0.source", "phone"),
     "$.messages[0].source", "is not one of"),
    ("text-without-content", "messages_post_text", _del("messages.0.text"),
     "$.messages[0]", "'text' is a required property"),
    ("text-without-body", "messages_post_text", _set("messages.0.text", {}),
     "$.messages[0].text", "'body' is a required property"),
    ("link-preview-body-elsewhere", "messages_post_link_preview",
     _del("messages.0.link_preview.body"), "$.messages[0].link_preview", "'body'"),
    ("image-without-media-id", "messages_post_image", _del("messages.0.image.id"),
     "$.messages[0].image", "'id' is a required property"),
    ("bad-media-id", "messages_post_image", _set("messages.0.image.id", "not a media id"),
     "$.messages[0].image.id", "does not match"),
    ("location-without-latitude", "messages_post_location",
     _del("messages.0.location.latitude"), "$.messages[0].location", "'latitude'"),
    ("poll-with-one-option", "messages_post_poll", _set("messages.0.poll.options", ["Tuesday"]),
     "$.messages[0].poll.options", "is too short"),
    ("action-without-content", "messages_post_action_reaction", _del("messages.0.action"),
     "$.messages[0]", "'action' is a required property"),
    ("action-without-type", "messages_post_action_reaction", _del("messages.0.action.type"),
     "$.messages[0].action", "'type' is a required property"),
    ("unknown-action", "messages_post_action_reaction", _set("messages.0.action.type", "like"),
     "$.messages[0].action.type", "is not one of"),
    ("event-response-unknown", "messages_post_action_event_response",
     _set("messages.0.action.event_response.response", "MAYBE"),
     "$.messages[0].action.event_response.response", "is not one of"),
    ("status-timestamp-as-number", "statuses_post_delivered",
     _set("statuses.0.timestamp", 1767261010),
     "$.statuses[0].timestamp", "is not of type 'string'"),
    ("unknown-status", "statuses_post_delivered", _set("statuses.0.status", "seen"),
     "$.statuses[0].status", "is not one of"),
    ("status-without-code", "statuses_post_delivered", _del("statuses.0.code"),
     "$.statuses[0]", "'code' is a required property"),
    ("recipient-not-a-chat-id", "statuses_post_delivered",
     _set("statuses.0.recipient_id", "447700900123"),
     "$.statuses[0].recipient_id", "does not match"),
    ("failed-error-without-code", "statuses_post_failed", _del("statuses.0.errors.0.code"),
     "$.statuses[0].errors[0]", "'code' is a required property"),
    ("statuses-event-without-statuses", "statuses_post_read", _del("statuses"),
     "$", "'statuses' is a required property"),
    ("patch-without-updates", "messages_patch_update", _del("messages_updates"),
     "$", "'messages_updates' is a required property"),
    ("update-without-after", "messages_patch_update", _del("messages_updates.0.after_update"),
     "$.messages_updates[0]", "'after_update' is a required property"),
    ("removed-not-a-message-id", "messages_delete_removed", _set("messages_removed", ["gone"]),
     "$.messages_removed[0]", "does not match"),
    ("chat-type-unknown", "chats_post_new", _set("chats.0.type", "person"),
     "$.chats[0].type", "is not one of"),
    ("chat-update-without-changes", "chats_patch_archive", _del("chats_updates.0.changes"),
     "$.chats_updates[0]", "'changes' is a required property"),
    ("channel-event-without-health", "channel_post_qr", _del("health"),
     "$", "'health' is a required property"),
    ("health-state-unknown", "channel_post_error", _set("health.status.text", "CONNECTED"),
     "$.health.status.text", "is not one of"),
    ("health-without-uptime", "channel_post_auth", _del("health.uptime"),
     "$.health", "'uptime' is a required property"),
    ("logout-without-user", "users_delete_logout", _del("user"),
     "$", "'user' is a required property"),
    ("user-without-name", "users_post_login", _del("user.name"),
     "$.user", "'name' is a required property"),
    ("presence-status-unknown", "presences_post", _set("presences.0.status", "away"),
     "$.presences[0].status", "is not one of"),
    ("no-event", "messages_post_text", _del("event"), "$", "'event' is a required property"),
    ("event-method-unknown", "messages_post_text", _set("event.event", "get"),
     "$.event.event", "is not one of"),
    ("event-type-unknown", "messages_post_text", _set("event.type", "message"),
     "$.event.type", "is not one of"),
    ("no-channel-id", "messages_post_text", _del("channel_id"),
     "$", "'channel_id' is a required property"),
    ("messages-not-a-list", "messages_post_text", _set("messages", {}),
     "$.messages", "is not of type 'array'"),
]


@pytest.mark.parametrize(
    ("base", "mutate", "path", "words"),
    [b[1:] for b in WEBHOOK_BREAKAGES], ids=[b[0] for b in WEBHOOK_BREAKAGES],
)
def test_webhook_schema_rejects_a_broken_payload(
    base: str, mutate: Mutation, path: str, words: str
) -> None:
    body = load_payload(base)
    assert_valid(WEBHOOK_SCHEMA, body)  # the unbroken one passes
    mutate(body)
    _assert_rejected(WEBHOOK_SCHEMA, body, path, words)


def _assert_rejected(name: str, body: object, path: str, words: str) -> None:
    lines = errors(name, body)
    assert any(line.startswith(f"{path}: ") and words in line for line in lines), (
        f"expected an error at {path} mentioning {words!r}; got {lines}")
    with pytest.raises(AssertionError) as raised:
        assert_valid(name, body)
    assert f"{path}: " in str(raised.value)


def test_assert_valid_lists_every_error_path() -> None:
    body = load_payload("messages_post_text")
    del body["channel_id"]
    body["messages"][0]["timestamp"] = "soon"
    body["messages"][0]["type"] = "chat"
    with pytest.raises(AssertionError) as raised:
        assert_valid(WEBHOOK_SCHEMA, body)
    text = str(raised.value)
    for path in ("$: 'channel_id'", "$.messages[0].timestamp:", "$.messages[0].type:"):
        assert path in text, text


def test_a_branch_failure_says_why() -> None:
    body = load_payload("chats_post_new")
    body["chats"][0]["id"] = "status@g.us"  # neither a ChatID nor status@broadcast
    lines = errors(WEBHOOK_SCHEMA, body)
    assert lines[0].startswith("$.chats[0].id: ")
    assert any(line.strip().startswith("because $.chats[0].id: ") for line in lines[1:])


TO = "447700900123@s.whatsapp.net"
REQUEST_BREAKAGES: list[tuple[str, str, Body, str, str]] = [
    ("text-no-body", "sender_text", {"to": TO}, "$", "'body' is a required property"),
    ("text-no-to", "sender_text", {"body": "hi"}, "$", "'to' is a required property"),
    ("text-plus-in-to", "sender_text", {"to": "+447700900123", "body": "hi"}, "$.to",
     "does not match"),
    ("text-to-too-short", "sender_text", {"to": "12345", "body": "hi"}, "$.to", "does not match"),
    ("text-body-not-string", "sender_text", {"to": TO, "body": 42}, "$.body", "not of type"),
    ("text-typing-too-long", "sender_text", {"to": TO, "body": "hi", "typing_time": 61},
     "$.typing_time", "maximum"),
    ("text-quoted-not-an-id", "sender_text", {"to": TO, "body": "hi", "quoted": "abc"},
     "$.quoted", "does not match"),
    ("text-mention-with-plus", "sender_text", {"to": TO, "body": "hi", "mentions": ["+4477"]},
     "$.mentions[0]", "does not match"),
    ("image-no-media", "sender_image", {"to": TO, "caption": "x"}, "$",
     "'media' is a required property"),
    ("image-media-not-string", "sender_image", {"to": TO, "media": 7}, "$.media", "not of type"),
    ("video-width-not-int", "sender_video", {"to": TO, "media": "m", "width": "wide"}, "$.width",
     "not of type"),
    ("document-no-media", "sender_document", {"to": TO, "filename": "a.pdf"}, "$",
     "'media' is a required property"),
    ("audio-bad-background", "sender_audio", {"to": TO, "media": "m", "background_color": "red"},
     "$.background_color", "does not match"),
    ("voice-negative-recording", "sender_voice", {"to": TO, "media": "m", "recording_time": -1},
     "$.recording_time", "minimum"),
    ("gif-autoplay-not-bool", "sender_gif", {"to": TO, "media": "m", "autoplay": "yes"},
     "$.autoplay", "not of type"),
    ("short-no-to", "sender_short", {"media": "m"}, "$", "'to' is a required property"),
    ("sent-without-sent", "sent_message", {"message": {}}, "$", "'sent' is a required property"),
    ("sent-as-string", "sent_message", {"sent": "true"}, "$.sent", "not of type 'boolean'"),
    ("sent-message-incomplete", "sent_message", {"sent": True, "message": {"id": "x"}},
     "$.message", "required property"),
    ("error-missing", "error", {"message": "Bad"}, "$", "'error' is a required property"),
    ("error-without-code", "error", {"error": {"message": "Bad"}}, "$.error",
     "'code' is a required property"),
    ("error-code-as-string", "error", {"error": {"code": "400", "message": "Bad"}},
     "$.error.code", "not of type 'integer'"),
    ("success-as-string", "success", {"success": "ok"}, "$.success", "not of type 'boolean'"),
]


@pytest.mark.parametrize(
    ("name", "body", "path", "words"),
    [b[1:] for b in REQUEST_BREAKAGES], ids=[b[0] for b in REQUEST_BREAKAGES],
)
def test_request_and_response_schemas_reject_a_broken_body(
    name: str, body: Body, path: str, words: str
) -> None:
    _assert_rejected(name, body, path, words)


# -- webhook settings (PATCH /settings) -------------------------------------------------

SETTINGS: Body = {
    "callback_backoff_delay_ms": 3000,
    "max_callback_backoff_delay_ms": 900000,
    "callback_persist": True,
    "webhooks": [{
        "url": "https://outbox.example.com/webhooks/whapi/7d0c",
        "mode": "method",
        "headers": {"X-Outbox-Webhook-Secret": "s3cret"},
        "events": [{"type": t, "method": m} for t, m in (
            ("messages", "post"), ("messages", "put"), ("messages", "patch"),
            ("messages", "delete"), ("statuses", "post"), ("statuses", "put"),
            ("chats", "post"), ("chats", "patch"), ("chats", "delete"),
            ("channel", "post"), ("users", "post"), ("users", "delete"))],
    }],
}

SETTINGS_BREAKAGES: list[tuple[str, Mutation, str, str]] = [
    ("mode-unknown", _set("webhooks.0.mode", "websocket"), "$.webhooks[0].mode", "is not one of"),
    ("no-url", _del("webhooks.0.url"), "$.webhooks[0]", "'url' is a required property"),
    ("deprecated-event-type", _set("webhooks.0.events.0.type", "ack"),
     "$.webhooks[0].events[0].type", "is not one of"),
    ("method-unknown", _set("webhooks.0.events.0.method", "get"),
     "$.webhooks[0].events[0].method", "is not one of"),
    ("backoff-too-short", _set("callback_backoff_delay_ms", 100),
     "$.callback_backoff_delay_ms", "minimum"),
    ("max-backoff-too-long", _set("max_callback_backoff_delay_ms", 7_200_000),
     "$.max_callback_backoff_delay_ms", "maximum"),
    ("six-headers", _set("webhooks.0.headers", {f"X-H{i}": "v" for i in range(6)}),
     "$.webhooks[0].headers", "too many properties"),
]


def test_settings_body_for_all_modes_is_valid() -> None:
    for mode in ("body", "path", "method"):
        body = copy.deepcopy(SETTINGS)
        body["webhooks"][0]["mode"] = mode
        assert_valid("settings", body)


@pytest.mark.parametrize(
    ("mutate", "path", "words"),
    [b[1:] for b in SETTINGS_BREAKAGES], ids=[b[0] for b in SETTINGS_BREAKAGES],
)
def test_settings_schema_rejects_a_broken_body(mutate: Mutation, path: str, words: str) -> None:
    body = copy.deepcopy(SETTINGS)
    mutate(body)
    _assert_rejected("settings", body, path, words)


# -- what our real client sends ----------------------------------------------------------

CHANNEL = uuid.UUID("00000000-0000-4000-8000-000000000001")
RECIPIENTS = ("+44 7700 900123", "120363041234567890@g.us")
# Every optional field the library offers; `_richest` drops the ones a type refuses.
OPTIONAL_MEDIA_FIELDS: Body = {"caption": "Spring catalogue", "filename": "catalogue.pdf"}
MIME_TYPES = {"image": "image/jpeg", "video": "video/mp4", "gif": "video/mp4", "short": "video/mp4",
              "document": "application/pdf", "audio": "audio/mpeg", "voice": "audio/ogg"}
MEDIA_URL = {
    "image": "https://example.com/a.jpg", "video": "https://example.com/a.mp4",
    "gif": "https://example.com/a.mp4", "short": "https://example.com/s.mp4",
    "document": "https://example.com/catalogue.pdf", "audio": "https://example.com/a.mp3",
    "voice": "https://example.com/v.ogg",
}


def _library_message(kind: str, to: str, *, rich: bool) -> NewMessage:
    """A message as a caller enqueues it, with every optional field `prepare` accepts."""
    if kind == "text":
        return TextMessage(channel_id=CHANNEL, to=to, body="Your order #1042 has shipped ✓")
    fields: Body = {}
    if rich:
        fields = {**OPTIONAL_MEDIA_FIELDS,
                  "mime_type": MIME_TYPES.get(kind, "application/octet-stream")}
    while True:
        message = MediaMessage(channel_id=CHANNEL, to=to, media_type=kind,
                               media=MEDIA_URL.get(kind, "https://example.com/file"), **fields)
        try:
            prepare(message)
        except InvalidMessage as exc:
            if exc.field in fields:  # this type refuses that field: leave it out
                del fields[exc.field]
                continue
            raise
        return message


CLIENT_CASES = [(kind, to, rich) for kind in MESSAGE_TYPES for to in RECIPIENTS
                for rich in ((False, True) if kind != "text" else (True,))]


def test_every_type_the_client_sends_has_a_request_schema() -> None:
    missing = [kind for kind in MESSAGE_TYPES if kind not in REQUEST_SCHEMAS]
    assert not missing, f"write tests/whapi_spec/sender_<type>.json for {missing}"


@pytest.fixture
async def client() -> AsyncIterator[WhapiClient]:
    c = WhapiClient(timeout=5.0, connect_attempts=1)
    yield c
    await c.aclose()


@pytest.mark.parametrize(
    ("kind", "to", "rich"), CLIENT_CASES,
    ids=[f"{k}-{'group' if '@g.us' in t else 'person'}-{'all' if r else 'minimal'}"
         for k, t, r in CLIENT_CASES],
)
async def test_client_request_body_matches_the_spec(
    client: WhapiClient, sim: SimulatorControl, sim_url: str, kind: str, to: str, rich: bool
) -> None:
    prepared = prepare(_library_message(kind, to, rich=rich))
    token = new_token()
    result = await client.send(
        base_url=sim_url, token=token,
        message=OutgoingMessage(prepared.recipient.wa_chat_id, prepared.message_type,
                                prepared.payload),
    )
    assert result.outcome is Outcome.SENT, result.error
    [record] = sim.sent(token=token)
    schema = REQUEST_SCHEMAS[kind]
    assert_valid(schema, dict(record.payload))
    undeclared = set(record.payload) - declared_properties(schema)
    assert not undeclared, f"the client sends fields {schema} does not declare: {undeclared}"


# -- what the simulator answers -----------------------------------------------------------

SIM_BODIES: dict[str, Body] = {
    "text": {"to": TO, "body": "hello"},
    "image": {"to": TO, "media": "https://example.com/a.jpg", "caption": "look"},
    "video": {"to": TO, "media": "https://example.com/a.mp4", "caption": "watch"},
    "gif": {"to": TO, "media": "https://example.com/a.mp4"},
    "short": {"to": TO, "media": "https://example.com/s.mp4"},
    "document": {"to": TO, "media": "https://example.com/a.pdf", "filename": "a.pdf"},
    "audio": {"to": TO, "media": "https://example.com/a.mp3"},
    "voice": {"to": TO, "media": "https://example.com/v.ogg"},
}


@pytest.fixture
def http(sim_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim_url, timeout=10.0, trust_env=False) as c:
        yield c


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_simulator_bodies_are_valid_requests() -> None:
    assert set(SIM_BODIES) == set(REQUEST_SCHEMAS)
    for kind, body in SIM_BODIES.items():
        assert_valid(REQUEST_SCHEMAS[kind], body)


@pytest.mark.parametrize("kind", sorted(SIM_BODIES))
def test_simulator_send_answer_matches_the_spec(
    http: httpx.Client, sim: SimulatorControl, kind: str
) -> None:
    token = new_token()
    resp = http.post(f"/messages/{kind}", json=SIM_BODIES[kind], headers=_auth(token))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert_valid("sent_message", body)
    assert body["sent"] is True
    # The same message, fetched back (GET /messages/{MessageID}), is a Message.
    fetched = http.get(f"/messages/{body['message']['id']}", headers=_auth(token))
    assert fetched.status_code == 200, fetched.text
    assert_valid("message", fetched.json())


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 415, 429, 500, 503])
def test_simulator_error_answer_matches_the_spec(
    http: httpx.Client, sim: SimulatorControl, status: int
) -> None:
    token = new_token()
    sim.set_faults(token=token, error_status=status)
    resp = http.post("/messages/text", json=SIM_BODIES["text"], headers=_auth(token))
    assert resp.status_code == status
    assert_valid("error", resp.json())


def test_simulator_validation_and_auth_errors_match_the_spec(http: httpx.Client) -> None:
    bad_to = http.post("/messages/text", json={"to": "+1 555", "body": "x"},
                       headers=_auth(new_token()))
    assert bad_to.status_code == 400
    assert_valid("error", bad_to.json())
    no_auth = http.post("/messages/text", json=SIM_BODIES["text"])
    assert no_auth.status_code == 401
    assert_valid("error", no_auth.json())


def test_simulator_health_matches_the_spec(http: httpx.Client) -> None:
    resp = http.get("/health", headers=_auth(new_token()))
    assert resp.status_code == 200
    assert_valid("health", resp.json())
