"""Every Whapi event kind through the real HTTP route and PostgreSQL, with
bodies from the spec-checked corpus (tests/whapi_payloads): the database
after delivery, after a replay (Whapi retries), after reordering, and in
each webhook mode (body, path, method)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.webhooks.apply import SECRET_HEADER, apply_pending
from tests.api_fixtures import webhook_secret
from tests.whapi_spec import load_payload

ALICE = "447700900123@s.whatsapp.net"
OUT_API = "syKUikDXTT9jqR28-JdqXq7Lm2R"  # our send, the target of the corpus' reaction
IN_TEXT = "IYwsisfSyFb5JnDiNWhr-AqDXq7Lm2R"
IN_IMAGE = "Xj5a2HA66pHXbuaatp9-tjeXq7Lm2R"
IN_DOCUMENT = "iz7QDlD74f1J5lmjariQf-LjhXq7Lm2R"
#: Inbound content: stored as a message, unread +1 each.
CONTENT = ["text", "image", "video", "gif", "audio", "voice", "document", "sticker",
           "location", "live_location", "contact", "contact_list", "link_preview", "poll",
           "interactive", "reply", "text_quoted", "order", "product", "event", "group",
           "lid", "mexico", "argentina", "brazil_8_digit", "brazil_9_digit"]
#: Actions that are counted, and change nothing.
IGNORED_ACTIONS = ["vote", "pin", "unpin", "ephemeral", "event_response"]


def deliver(api: httpx.Client, channel: uuid.UUID, secret: str, payload: Any, *,
            mode: str = "body") -> dict[str, Any]:
    """POST a body the way Whapi would in `mode`. In the path and method modes
    the body's own `event` is dropped, so the URL alone must name it."""
    event = payload.get("event", {}) if isinstance(payload, dict) else {}
    kind, method = event.get("type", "messages"), event.get("event", "post")
    url, verb = f"/webhooks/whapi/{channel}", "POST"
    if mode != "body":
        payload = {k: v for k, v in payload.items() if k != "event"}
        url = f"{url}/{kind}/{method}" if mode == "path" else f"{url}/{kind}"
        verb = "POST" if mode == "path" else method.upper()
    r = api.request(verb, url, content=json.dumps(payload).encode(),
                    headers={SECRET_HEADER: secret, "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Everything a webhook may change, for before/after comparisons."""
    queries = {
        "messages": "SELECT wa_message_id, direction, type, status, body, reactions, "
                    "edit_history, edited_at, deleted_at, updated_at FROM outbox.messages",
        "chats": "SELECT wa_chat_id, unread_count, status, last_message_at, "
                 "last_message_preview, updated_at FROM outbox.chats",
        "contacts": "SELECT phone, name, is_group FROM outbox.contacts",
        "channels": "SELECT id, status, pause_cause, updated_at FROM outbox.channels",
        "pending": "SELECT wa_message_id, kind, action_key FROM outbox.webhook_pending",
        "dead": "SELECT reason FROM outbox.webhook_dead_letters",
    }
    with engine.connect() as conn:
        return {name: sorted(map(tuple, conn.execute(text(sql))), key=repr)
                for name, sql in queries.items()}


def message(engine: Engine, wa_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT m.direction, m.type, m.status, m.body, m.payload, m.reactions, "
            "m.edit_history, m.edited_at, m.deleted_at, c.wa_chat_id, c.unread_count, "
            "c.status AS chat_status, c.last_message_preview, ct.phone, ct.name "
            "FROM outbox.messages m JOIN outbox.chats c ON c.id = m.chat_id "
            "JOIN outbox.contacts ct ON ct.id = c.contact_id WHERE m.wa_message_id = :w"),
            {"w": wa_id}).one_or_none()


def sent_to_alice(engine: Engine, channel: uuid.UUID, wa_id: str = OUT_API) -> uuid.UUID:
    """Our send to Alice as the dispatcher leaves it (status sent, id recorded)."""
    from outbox.enqueue import enqueue_text

    with Session(engine) as s, s.begin():
        mid = enqueue_text(s, channel_id=channel, to="+44 7700 900123",
                           body="Your order #1042 has shipped").message_id
        s.execute(text("UPDATE outbox.messages SET status = 'sent', wa_message_id = :w, "
                       "sent_at = now() WHERE id = :id"), {"w": wa_id, "id": mid})
    return mid


@pytest.fixture
def channel(make_channel, api_db: Engine) -> tuple[uuid.UUID, str]:  # type: ignore[no-untyped-def]
    ch = make_channel()
    return ch, webhook_secret(api_db, ch)


# --- inbound content -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", CONTENT)
def test_inbound_content_is_stored_once_with_its_text(api: httpx.Client, api_db: Engine,
                                                      channel, name: str) -> None:
    ch, secret = channel
    payload = load_payload(f"messages_post_{name}")
    entry = payload["messages"][0]
    first = deliver(api, ch, secret, payload)
    assert first["messages"] == {"inserted": 1, "duplicates": 0, "echoes": 0}, first
    row = message(api_db, entry["id"])
    assert (row.direction, row.type, row.status) == ("inbound", entry["type"], "delivered")
    assert row.unread_count == 1 and row.payload["id"] == entry["id"]
    expected_text = {"text": entry.get("text", {}).get("body"),
                     "link_preview": entry.get("link_preview", {}).get("body"),
                     "reply": entry.get("reply", {}).get("buttons_reply", {}).get("title")}
    if entry["type"] in expected_text:
        assert row.body and row.body == expected_text[entry["type"]]
    assert row.last_message_preview == (row.body or f"[{entry['type']}]")[:100]

    # Whapi retries: a replay changes nothing at all.
    before = snapshot(api_db)
    again = deliver(api, ch, secret, payload)
    assert again["messages"] == {"inserted": 0, "duplicates": 1, "echoes": 0}
    assert snapshot(api_db) == before


def test_offline_backlog_put_is_stored_like_post(api: httpx.Client, api_db: Engine,
                                                 channel) -> None:
    ch, secret = channel
    payload = load_payload("messages_put_backlog")
    n = len(payload["messages"])
    assert deliver(api, ch, secret, payload)["messages"]["inserted"] == n
    as_post = {**payload, "event": {"type": "messages", "event": "post"}}
    assert deliver(api, ch, secret, as_post)["messages"]["duplicates"] == n
    with api_db.connect() as conn:
        assert conn.execute(text("SELECT sum(unread_count) FROM outbox.chats")).scalar_one() == n


@pytest.mark.parametrize(("name", "outbound_to"), [
    ("mexico", "+52 55 1234 5678"),
    ("argentina", "+54 11 2345 6789"),
    ("brazil_8_digit", "+55 31 98765 4321"),
    ("brazil_9_digit", "+55 11 98765 4321"),
])
def test_reply_from_a_country_rule_number_lands_in_the_outbound_chat(
        api: httpx.Client, api_db: Engine, channel, name: str, outbound_to: str) -> None:
    """Whapi routes these numbers under other digits (521, 549, Brazil's 9th
    digit): our send and the customer's reply share one contact and chat."""
    from outbox.enqueue import enqueue_text

    ch, secret = channel
    with Session(api_db) as s, s.begin():
        sent = enqueue_text(s, channel_id=ch, to=outbound_to, body="Your order shipped")
    payload = load_payload(f"messages_post_{name}")
    deliver(api, ch, secret, payload)
    with api_db.connect() as conn:
        chats = conn.execute(text("SELECT id, wa_chat_id FROM outbox.chats")).all()
        contacts = conn.execute(text("SELECT count(*) FROM outbox.contacts")).scalar_one()
        recipient = conn.execute(text("SELECT recipient FROM outbox.outbox_messages")).scalar_one()
    assert [c.id for c in chats] == [sent.chat_id] and contacts == 1
    assert recipient == chats[0].wa_chat_id == payload["messages"][0]["chat_id"]


def test_lid_chat_is_kept_with_a_contact_by_its_linked_id(api: httpx.Client, api_db: Engine,
                                                          channel) -> None:
    ch, secret = channel
    deliver(api, ch, secret, load_payload("messages_post_lid"))
    row = message(api_db, "JmvPieSPqNG3oSxK-NF7Xq7Lm2R")
    assert (row.wa_chat_id, row.phone, row.name) == (
        "183729465018273@lid", "183729465018273@lid", "Dana")


@pytest.mark.parametrize(("name", "ignored"), [
    ("messages_post_newsletter", {"not_a_conversation.newsletter": 1}),
    ("chats_patch_story", {"not_a_conversation.status": 1}),
    ("presences_post", {"presences": 1}),
    ("calls_post", {"calls": 1}),
    ("messages_post_action_comment", {"action.comment": 1}),
])
def test_what_is_not_a_conversation_is_counted_and_changes_nothing(
        api: httpx.Client, api_db: Engine, channel, name: str, ignored: dict[str, int]) -> None:
    ch, secret = channel
    before = snapshot(api_db)
    result = deliver(api, ch, secret, load_payload(name))
    assert result["ignored"] == ignored and not result["dead_lettered"]
    assert snapshot(api_db) == before


# --- actions -------------------------------------------------------------------------------


def test_reaction_is_recorded_on_its_target_not_as_a_message(api: httpx.Client, api_db: Engine,
                                                             channel) -> None:
    from outbox.admin.chats import archive_chat

    ch, secret = channel
    mid = sent_to_alice(api_db, ch)
    with Session(api_db) as s, s.begin():
        archive_chat(s, s.execute(text("SELECT chat_id FROM outbox.messages WHERE id = :id"),
                                  {"id": mid}).scalar_one())
    reaction = load_payload("messages_post_action_reaction")
    result = deliver(api, ch, secret, reaction)
    assert result["actions"] == {"applied": 1, "unchanged": 0, "pending": 0}
    row = message(api_db, OUT_API)
    assert row.reactions == {"447700900123": {"emoji": "👍", "at": 1767262800.0}}
    # No new message, no unread, the archived chat stays archived (one 👍 on a
    # campaign message must not reopen it).
    assert (row.unread_count, row.chat_status) == (0, "archived")
    with api_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outbox.messages")).scalar_one() == 1

    before = snapshot(api_db)
    assert deliver(api, ch, secret, reaction)["actions"]["unchanged"] == 1
    assert snapshot(api_db) == before

    removed = load_payload("messages_post_action_reaction_removed")
    deliver(api, ch, secret, removed)
    assert message(api_db, OUT_API).reactions["447700900123"]["emoji"] == ""
    # The older 👍 arriving again late does not bring it back.
    deliver(api, ch, secret, reaction)
    assert message(api_db, OUT_API).reactions["447700900123"]["emoji"] == ""


def test_a_second_reaction_replaces_the_first_and_reactors_are_apart(
        api: httpx.Client, api_db: Engine, channel) -> None:
    ch, secret = channel
    sent_to_alice(api_db, ch)
    base = load_payload("messages_post_action_reaction")
    for n, (sender, emoji) in enumerate([("447700900123", "👍"), ("447700900123", "❤️"),
                                         ("447700900999", "😂")]):
        payload = json.loads(json.dumps(base))
        entry = payload["messages"][0]
        entry.update(id=f"react-{n}", timestamp=1767262800 + n, **{"from": sender})
        entry["action"]["emoji"] = emoji
        deliver(api, ch, secret, payload)
    reactions = message(api_db, OUT_API).reactions
    assert {k: v["emoji"] for k, v in reactions.items()} == {
        "447700900123": "❤️", "447700900999": "😂"}


def test_edit_replaces_the_text_and_keeps_the_old_in_history(api: httpx.Client,
                                                             api_db: Engine, channel) -> None:
    ch, secret = channel
    deliver(api, ch, secret, load_payload("messages_post_text"))
    unread = message(api_db, IN_TEXT).unread_count
    result = deliver(api, ch, secret, load_payload("messages_post_action_edit"))
    assert result["actions"]["applied"] == 1 and result["messages"]["inserted"] == 0
    row = message(api_db, IN_TEXT)
    assert row.body == "Hi, where is my order #1043?"
    assert row.payload["text"]["body"] == "Hi, where is my order #1043?"
    assert [h["body"] for h in row.edit_history] == ["Hi, where is my order #1042?"]
    assert row.edited_at is not None and row.unread_count == unread

    # The same edit as action type "edited" and as messages.patch: one edit.
    before = snapshot(api_db)
    for name in ("messages_post_action_edited", "messages_patch_update",
                 "messages_post_action_edit"):
        deliver(api, ch, secret, load_payload(name))
    assert snapshot(api_db) == before


def test_edit_before_its_original_waits_and_is_applied_when_it_arrives(
        api: httpx.Client, api_db: Engine, channel) -> None:
    ch, secret = channel
    result = deliver(api, ch, secret, load_payload("messages_patch_update"))
    assert result["actions"]["pending"] == 1
    with api_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outbox.messages")).scalar_one() == 0
    deliver(api, ch, secret, load_payload("messages_post_text"))
    row = message(api_db, IN_TEXT)
    assert row.body == "Hi, where is my order #1043?"
    assert [h["body"] for h in row.edit_history] == ["Hi, where is my order #1042?"]
    assert snapshot(api_db)["pending"] == []


def test_delete_marks_the_target_and_keeps_the_row(api: httpx.Client, api_db: Engine,
                                                   channel) -> None:
    ch, secret = channel
    deliver(api, ch, secret, load_payload("messages_post_image"))
    result = deliver(api, ch, secret, load_payload("messages_post_action_delete"))
    assert result["actions"]["applied"] == 1
    row = message(api_db, IN_IMAGE)
    assert row.deleted_at is not None and row.type == "image"
    before = snapshot(api_db)
    assert deliver(api, ch, secret, load_payload("messages_post_action_delete"))[
        "actions"]["unchanged"] == 1
    assert snapshot(api_db) == before


def test_removed_unknown_id_waits_then_expires(api: httpx.Client, api_db: Engine,
                                               channel) -> None:
    ch, secret = channel
    removed = load_payload("messages_delete_removed")
    assert deliver(api, ch, secret, removed)["actions"]["pending"] == 1
    assert deliver(api, ch, secret, removed)["actions"]["pending"] == 1  # replay: one row
    assert [p[1] for p in snapshot(api_db)["pending"]] == ["delete"]
    # Arrives later (reordered): marked deleted on arrival.
    deliver(api, ch, secret, load_payload("messages_post_document"))
    assert message(api_db, IN_DOCUMENT).deleted_at is not None
    # A delete whose message never comes expires.
    other = {**removed, "messages_removed": ["never-stored-id"]}
    deliver(api, ch, secret, other)
    with Session(api_db) as s, s.begin():
        result = apply_pending(s, action_wait_seconds=0)
    assert (result.expired, result.applied) == (1, 0)
    assert snapshot(api_db)["pending"] == []


@pytest.mark.parametrize("kind", IGNORED_ACTIONS)
def test_other_actions_are_counted_and_change_nothing(api: httpx.Client, api_db: Engine,
                                                      channel, kind: str) -> None:
    ch, secret = channel
    deliver(api, ch, secret, load_payload("messages_post_poll"))
    before = snapshot(api_db)
    result = deliver(api, ch, secret, load_payload(f"messages_post_action_{kind}"))
    assert result["ignored"] == {f"action.{kind}": 1}
    assert snapshot(api_db) == before


# --- our side of the conversation ----------------------------------------------------------


def test_message_typed_on_the_phone_joins_the_thread(api: httpx.Client, api_db: Engine,
                                                     channel) -> None:
    ch, secret = channel
    payload = load_payload("messages_post_from_phone")
    deliver(api, ch, secret, payload)
    row = message(api_db, payload["messages"][0]["id"])
    assert (row.direction, row.status, row.body) == ("outbound", "sent", "On my way, 10 minutes")
    assert row.unread_count == 0 and row.last_message_preview == "On my way, 10 minutes"
    before = snapshot(api_db)
    deliver(api, ch, secret, payload)
    assert snapshot(api_db) == before


def test_echo_before_the_dispatcher_records_the_id_is_stored_once(
        api: httpx.Client, api_db: Engine, channel) -> None:
    """Whapi's echo of our send can beat the dispatcher's record of the id:
    it waits, and when the record lands the two are one message."""
    from outbox.enqueue import enqueue_text

    ch, secret = channel
    with Session(api_db) as s, s.begin():
        mid = enqueue_text(s, channel_id=ch, to="+44 7700 900123", body="shipped").message_id
    echo = load_payload("messages_post_echo_api")
    assert deliver(api, ch, secret, echo)["messages"]["echoes"] == 1
    assert [p[1] for p in snapshot(api_db)["pending"]] == ["echo"]
    with api_db.begin() as conn:  # what COMPLETE does
        conn.execute(text("UPDATE outbox.messages SET status = 'sent', wa_message_id = :w "
                          "WHERE id = :id"), {"w": OUT_API, "id": mid})
    with Session(api_db) as s, s.begin():
        result = apply_pending(s, echo_wait_seconds=0)
    assert (result.echoes_matched, result.echoes_stored) == (1, 0)
    with api_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outbox.messages")).scalar_one() == 1
    assert snapshot(api_db)["pending"] == []


def test_echo_nobody_records_was_someone_elses_send_and_is_stored(
        api: httpx.Client, api_db: Engine, channel) -> None:
    ch, secret = channel
    deliver(api, ch, secret, load_payload("messages_post_echo_api"))
    with Session(api_db) as s, s.begin():
        assert apply_pending(s).echoes_stored == 0  # still within its wait
    with Session(api_db) as s, s.begin():
        assert apply_pending(s, echo_wait_seconds=0).echoes_stored == 1
    row = message(api_db, OUT_API)
    assert (row.direction, row.body, row.unread_count) == (
        "outbound", "Your order #1042 has shipped", 0)


@pytest.mark.parametrize("name", ["messages_post_call", "messages_post_system"])
def test_calls_and_system_notes_are_chat_events_not_text(api: httpx.Client, api_db: Engine,
                                                         channel, name: str) -> None:
    ch, secret = channel
    deliver(api, ch, secret, load_payload("messages_post_text"))
    listing = snapshot(api_db)["chats"]
    payload = load_payload(name)
    assert deliver(api, ch, secret, payload)["messages"]["inserted"] == 1
    row = message(api_db, payload["messages"][0]["id"])
    assert row.type == name.rsplit("_", 1)[1] and row.unread_count == 1
    assert snapshot(api_db)["chats"] == listing  # no unread, no preview change


# --- statuses ------------------------------------------------------------------------------


def test_statuses_put_backlog_applies_like_post(api: httpx.Client, api_db: Engine,
                                                channel) -> None:
    ch, secret = channel
    payload = load_payload("statuses_put_backlog")
    ids = {s["id"] for s in payload["statuses"]}
    for n, wa_id in enumerate(sorted(ids)):
        sent_to_alice(api_db, ch, wa_id) if n == 0 else _sent(api_db, ch, wa_id, n)
    deliver(api, ch, secret, payload)
    before = snapshot(api_db)
    deliver(api, ch, secret, payload)
    assert snapshot(api_db)["messages"] == before["messages"]
    assert message(api_db, "OaFGWLfuflqlR7ks-i0EXq7Lm2R").status == "read"


@pytest.mark.parametrize("early", [False, True])
def test_failed_status_records_why(api: httpx.Client, api_db: Engine, channel,
                                   early: bool) -> None:
    """Whapi's `errors` on a failed status become the message's error, also
    when the status came before the dispatcher recorded the id."""
    from outbox.webhooks.apply import apply_status_backlog

    ch, secret = channel
    payload = load_payload("statuses_post_failed")
    wa_id = payload["statuses"][0]["id"]
    if early:
        assert deliver(api, ch, secret, payload)["statuses"]["backlogged"] == 1
        _sent(api_db, ch, wa_id, 1)
        with Session(api_db) as s, s.begin():
            apply_status_backlog(s)
    else:
        _sent(api_db, ch, wa_id, 1)
        assert deliver(api, ch, secret, payload)["statuses"]["applied"] == 1
    with api_db.connect() as conn:
        row = conn.execute(text("SELECT status, error FROM outbox.messages "
                                "WHERE wa_message_id = :w"),
                           {"w": wa_id}).one()
    assert row.status == "failed"
    assert row.error == ("400: Message undeliverable: "
                         "The recipient cannot receive this message")


def _sent(engine: Engine, channel: uuid.UUID, wa_id: str, n: int) -> None:
    from outbox.enqueue import enqueue_text

    with Session(engine) as s, s.begin():
        mid = enqueue_text(s, channel_id=channel, to=f"+1555010{n:04d}", body="x").message_id
        s.execute(text("UPDATE outbox.messages SET status = 'sent', wa_message_id = :w "
                       "WHERE id = :id"), {"w": wa_id, "id": mid})


# --- chats and channel health ---------------------------------------------------------------


def test_archive_state_follows_the_phone(api: httpx.Client, api_db: Engine, channel) -> None:
    ch, secret = channel
    deliver(api, ch, secret, load_payload("messages_post_text"))
    archive = load_payload("chats_patch_archive")
    assert deliver(api, ch, secret, archive)["chats"] == 1
    assert message(api_db, IN_TEXT).chat_status == "archived"
    assert deliver(api, ch, secret, archive)["chats"] == 0  # replay
    unarchive = json.loads(json.dumps(archive))
    unarchive["chats_updates"][0]["after_update"]["archive"] = False
    deliver(api, ch, secret, unarchive)
    assert message(api_db, IN_TEXT).chat_status == "active"
    deliver(api, ch, secret, load_payload("chats_delete"))
    row = message(api_db, IN_TEXT)
    assert row.chat_status == "archived" and row.body  # history kept


def _channel(engine: Engine, channel: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT status, pause_cause, pause_reason FROM outbox.channels "
                                 "WHERE id = :id"), {"id": channel}).one()


@pytest.mark.parametrize(("name", "reason"), [
    ("channel_post_qr", "QR"), ("channel_post_error", "ERROR"),
    ("users_delete_logout", "logged out")])
def test_session_lost_pauses_the_channel_and_auth_resumes_it(
        api: httpx.Client, api_db: Engine, channel, name: str, reason: str) -> None:
    ch, secret = channel
    deliver(api, ch, secret, load_payload(name))
    row = _channel(api_db, ch)
    assert (row.status, row.pause_cause) == ("paused", "session") and reason in row.pause_reason
    deliver(api, ch, secret, load_payload("channel_post_auth"))
    assert tuple(_channel(api_db, ch)) == ("active", None, None)


def test_auth_resumes_a_channel_paused_by_a_401_but_not_by_an_operator(
        api: httpx.Client, api_db: Engine, make_channel) -> None:
    from outbox.admin.channels import pause_channel

    by_401, by_hand = make_channel(name="a"), make_channel(name="b", phone="+15550000002")
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.channels SET status = 'paused', "
                          "pause_cause = 'unauthorized', "
                          "pause_reason = 'HTTP 401' WHERE id = :id"), {"id": by_401})
    with Session(api_db) as s, s.begin():
        pause_channel(s, by_hand)
    for ch in (by_401, by_hand):
        deliver(api, ch, webhook_secret(api_db, ch), load_payload("channel_post_auth"))
        deliver(api, ch, webhook_secret(api_db, ch), load_payload("users_delete_logout"))
        deliver(api, ch, webhook_secret(api_db, ch), load_payload("channel_post_auth"))
    assert _channel(api_db, by_401).status == "active"
    assert tuple(_channel(api_db, by_hand))[:2] == ("paused", "manual")


# --- webhook modes -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["body", "path", "method"])
def test_every_mode_routes_by_the_url_when_the_body_names_no_event(
        api: httpx.Client, api_db: Engine, channel, mode: str) -> None:
    ch, secret = channel
    sent_to_alice(api_db, ch)
    deliver(api, ch, secret, load_payload("messages_post_text"), mode=mode)
    deliver(api, ch, secret, load_payload("statuses_post_read"), mode=mode)
    deliver(api, ch, secret, load_payload("messages_patch_update"), mode=mode)
    assert message(api_db, IN_TEXT).body == "Hi, where is my order #1043?"
    assert message(api_db, OUT_API).status == "read"
    # users.delete has no array of its own: only the event name says "logged out".
    if mode != "body":
        deliver(api, ch, secret, load_payload("users_delete_logout"), mode=mode)
        assert _channel(api_db, ch).pause_cause == "session"


@pytest.mark.parametrize("path", ["/nonsense/post", "/messages/teleport", "/nonsense"])
def test_unknown_event_names_in_the_url_are_still_answered_200(
        api: httpx.Client, api_db: Engine, channel, path: str) -> None:
    ch, secret = channel
    r = api.post(f"/webhooks/whapi/{ch}{path}", content=json.dumps(
        load_payload("messages_post_text")).encode(), headers={SECRET_HEADER: secret})
    assert r.status_code == 200 and r.json()["messages"]["inserted"] == 1


def test_outbox_status_shows_webhook_dead_letters(api: httpx.Client, api_db: Engine,
                                                  channel) -> None:
    from tests.dispatch_helpers import cli

    ch, secret = channel
    assert "webhook bodies kept unused" not in cli("status").stdout
    for body in (b"{not json", b'{"messages": [{"id": 5}]}', b"{not json"):
        r = api.post(f"/webhooks/whapi/{ch}", content=body, headers={SECRET_HEADER: secret})
        assert r.status_code == 200 and r.json()["dead_lettered"]
    out = cli("status")
    assert out.returncode == 0, out.stderr
    assert "webhook bodies kept unused: 2" in out.stdout
    data = json.loads(cli("status", "--json").stdout)
    assert data["webhook_dead_letters"]["count"] == 2


def test_a_new_chat_reported_by_whapi_is_created_without_messages(
        api: httpx.Client, api_db: Engine, channel) -> None:
    ch, secret = channel
    payload = load_payload("chats_post_new")
    assert deliver(api, ch, secret, payload)["chats"] >= 1
    after = snapshot(api_db)
    assert [c[:3] for c in after["chats"]] == [(ALICE, 0, "active")]
    assert [c[0] for c in after["contacts"]] == ["+447700900123"] and after["messages"] == []
    deliver(api, ch, secret, payload)
    assert snapshot(api_db) == after
    # Her first message lands in that chat.
    deliver(api, ch, secret, load_payload("messages_post_text"))
    assert [c[:2] for c in snapshot(api_db)["chats"]] == [(ALICE, 1)]
