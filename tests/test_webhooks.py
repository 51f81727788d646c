"""Whapi webhooks over a real socket: statuses (forward only, replays,
early statuses), inbound messages (idempotent, unread once, reopen), echoes,
auth and malformed payloads. Plus the pure rules, exhaustively."""

from __future__ import annotations

import itertools
import json
import random
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.webhooks.apply import (
    SECRET_HEADER,
    STATUS_ORDER,
    furthest_status,
    next_status,
)
from outbox.webhooks.routes import parse_timestamp, parse_webhook
from tests.api_fixtures import row_counts, webhook_secret
from tests.dispatch_helpers import store_webhook_secret

PROGRESS = ("sent", "delivered", "read")
#: Whapi's numeric status codes (its Status.code).
STATUS_CODES = {"failed": 0, "pending": 1, "sent": 2, "delivered": 3, "read": 4, "played": 5,
                "deleted": 6}


# --- pure rules -----------------------------------------------------------------


def test_next_status_moves_forward_only() -> None:
    for current, incoming in itertools.product(STATUS_ORDER, STATUS_ORDER):
        new = next_status(current, incoming)
        if STATUS_ORDER.index(incoming) > STATUS_ORDER.index(current):
            assert new == incoming
        else:
            assert new is None, (current, incoming)
    assert next_status("read", "delivered") is None
    # failed moves only a message not yet delivered; a delivery beats a failure
    assert next_status("sent", "failed") == "failed"
    assert next_status("delivered", "failed") is None
    assert next_status("read", "failed") is None
    assert next_status("failed", "delivered") == "delivered"


def test_furthest_status_is_order_independent() -> None:
    for n in range(1, 5):
        for combo in itertools.product(STATUS_ORDER, repeat=n):
            expected = max(("pending", *combo), key=STATUS_ORDER.index)
            for perm in set(itertools.permutations(combo)):
                assert furthest_status(perm) == expected


def test_parse_webhook_batches_routes_and_names_what_it_cannot_use() -> None:
    payload = [
        {"statuses": [{"id": "a", "status": "read", "timestamp": "1712995378"},
                      {"id": "b", "status": "teleported"}, {"status": "sent"}, "junk"],
         "event": {"type": "statuses", "event": "post"}, "channel_id": "X"},
        {"messages": [{"id": "m1", "from_me": False, "type": "text",
                       "chat_id": "919984351847@s.whatsapp.net", "timestamp": 1712995245,
                       "text": {"body": "Hello\x00 world"}, "from_name": "Gerald"},
                      {"id": "m2", "from_me": True, "type": "text", "source": "api",
                       "chat_id": "15550100001@s.whatsapp.net"},
                      {"id": "m3", "from_me": False, "chat_id": "status@broadcast"}],
         "contacts": [{"id": "x"}], "presences": []},
        {"messages_updates": [], "chats": []},
    ]
    parsed = parse_webhook(payload)
    assert [(s.wa_message_id, s.status) for s in parsed.statuses] == [("a", "read")]
    assert parsed.statuses[0].at is not None and parsed.statuses[0].at.year == 2024
    assert len(parsed.messages) == 1
    m = parsed.messages[0]
    assert (m.chat.phone, m.chat.wa_chat_id, m.body, m.contact_name) == (
        "+919984351847", "919984351847@s.whatsapp.net", "Hello world", "Gerald")
    assert m.counts_unread and m.direction == "inbound"
    assert [e.message.wa_message_id for e in parsed.echoes] == ["m2"]
    assert parsed.ignored == {"contacts": 1, "presences": 1, "not_a_conversation.status": 1}
    assert len(parsed.unusable) == 3  # unknown status, no id, junk
@pytest.mark.parametrize("value", ["1712995378", 1712995378, 1712995378.5, " 1712995378 "])
def test_parse_timestamp_accepts_string_and_number(value: Any) -> None:
    ts = parse_timestamp(value)
    assert ts is not None and int(ts.timestamp()) == 1712995378


@pytest.mark.parametrize("value", [None, "", "soon", True, -5, 10**12, [], {}])
def test_parse_timestamp_rejects_garbage(value: Any) -> None:
    assert parse_timestamp(value) is None


# --- helpers -------------------------------------------------------------------------


def _hook(api: httpx.Client, channel_id: object, payload: Any,
          secret: str | None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[SECRET_HEADER] = secret
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return api.post(f"/webhooks/whapi/{channel_id}", content=content, headers=headers)


def _status(wa_id: str, status: str, ts: int = 1712995378) -> dict[str, Any]:
    return {"statuses": [{"id": wa_id, "code": STATUS_CODES[status],
                          "status": status, "recipient_id": "15550100001@s.whatsapp.net",
                          "timestamp": str(ts)}],
            "event": {"type": "statuses", "event": "post"}, "channel_id": "MANTIS-M72HC"}


def _inbound(wa_id: str, *, chat: str = "15550100009@s.whatsapp.net", body: str = "hi",
             ts: int = 1712995245, from_me: bool = False) -> dict[str, Any]:
    return {"messages": [{"id": wa_id, "from_me": from_me, "type": "text", "chat_id": chat,
                          "timestamp": ts, "source": "mobile", "text": {"body": body},
                          "from": chat.split("@")[0], "from_name": "Gerald"}],
            "event": {"type": "messages", "event": "post"}, "channel_id": "MANTIS-M72HC"}


def _sent_message(engine: Engine, channel_id: uuid.UUID, wa_id: str | None,
                  to: str = "+15550100001") -> uuid.UUID:
    """An outbound message as the dispatcher leaves it after a send (or,
    with wa_id None, before: enqueued, not yet recorded)."""
    from outbox.enqueue import enqueue_text

    with Session(engine) as s, s.begin():
        mid = enqueue_text(s, channel_id=channel_id, to=to, body="x").message_id
        if wa_id is not None:
            s.execute(text("UPDATE outbox.messages SET status = 'sent', wa_message_id = :w, "
                           "sent_at = now() WHERE id = :id"), {"w": wa_id, "id": mid})
    return mid


def _message(engine: Engine, mid: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT status, delivered_at, read_at, updated_at "
                                 "FROM outbox.messages WHERE id = :id"), {"id": mid}).one()


# --- statuses ----------------------------------------------------------------------------


def test_statuses_out_of_order_and_repeated_end_at_the_furthest(
        api: httpx.Client, make_channel, api_db: Engine) -> None:
    ch = make_channel()
    secret = webhook_secret(api_db, ch)
    mid = _sent_message(api_db, ch, "wa-1")
    log = [_status("wa-1", s, 1712995300 + i) for i, s in
           enumerate(["read", "sent", "delivered", "read", "delivered", "sent"])]
    for payload in log:
        r = _hook(api, ch, payload, secret)
        assert r.status_code == 200, r.text
    row = _message(api_db, mid)
    assert row.status == "read"
    assert row.read_at is not None and row.delivered_at is not None

    # Replaying the whole log (Whapi retries) changes nothing, not even updated_at.
    before = (row, row_counts(api_db))
    for payload in log:
        body = _hook(api, ch, payload, secret).json()
        assert body["statuses"]["applied"] == 0
    assert (_message(api_db, mid), row_counts(api_db)) == before


def test_every_arrival_order_gives_the_same_result(api: httpx.Client, make_channel,
                                                   api_db: Engine) -> None:
    ch = make_channel()
    secret = webhook_secret(api_db, ch)
    rng = random.Random(7)
    for n in range(6):
        wa = f"wa-perm-{n}"
        mid = _sent_message(api_db, ch, wa, to=f"+1555020000{n}")
        statuses = [*PROGRESS, rng.choice(PROGRESS)]
        rng.shuffle(statuses)
        # one batch with everything, then each one again on its own
        batch = {"statuses": [_status(wa, s)["statuses"][0] for s in statuses]}
        assert _hook(api, ch, batch, secret).status_code == 200
        for s in statuses:
            _hook(api, ch, _status(wa, s), secret)
        assert _message(api_db, mid).status == "read"


def test_late_failed_or_deleted_never_undo_a_delivery(api: httpx.Client, make_channel,
                                                      api_db: Engine) -> None:
    ch = make_channel()
    secret = webhook_secret(api_db, ch)
    a = _sent_message(api_db, ch, "wa-a", to="+15550100011")
    b = _sent_message(api_db, ch, "wa-b", to="+15550100012")
    _hook(api, ch, _status("wa-a", "read"), secret)
    read_row = _message(api_db, a)
    for late in ("delivered", "failed", "sent"):
        _hook(api, ch, _status("wa-a", late), secret)
    assert _message(api_db, a) == read_row
    # `deleted` marks the message deleted and keeps what it reached.
    _hook(api, ch, _status("wa-a", "deleted"), secret)
    with api_db.connect() as conn:
        row = conn.execute(text("SELECT status, deleted_at FROM outbox.messages WHERE id = :id"),
                           {"id": a}).one()
    assert row.status == "read" and row.deleted_at is not None

    # failed from sent; then a delivery report is the stronger fact.
    _hook(api, ch, _status("wa-b", "failed"), secret)
    assert _message(api_db, b).status == "failed"
    _hook(api, ch, _status("wa-b", "sent"), secret)
    assert _message(api_db, b).status == "failed"
    _hook(api, ch, _status("wa-b", "delivered"), secret)
    assert _message(api_db, b).status == "delivered"


def test_statuses_apply_to_outbound_messages_only(api: httpx.Client, make_channel,
                                                 api_db: Engine) -> None:
    ch = make_channel()
    secret = webhook_secret(api_db, ch)
    _hook(api, ch, _inbound("in-st"), secret)
    for status in ("read", "failed", "played"):
        body = _hook(api, ch, _status("in-st", status), secret).json()
        assert body["statuses"] == {"applied": 0, "unchanged": 1, "backlogged": 0}
    with api_db.connect() as conn:
        assert conn.execute(text("SELECT status FROM outbox.messages WHERE wa_message_id = 'in-st'")
                            ).scalar_one() == "delivered"
        assert conn.execute(
            text("SELECT count(*) FROM outbox.webhook_status_backlog")).scalar() == 0


def test_status_before_the_id_is_known_is_applied_later(api: httpx.Client, make_channel,
                                                       api_db: Engine) -> None:
    from outbox.webhooks.apply import apply_status_backlog

    ch = make_channel()
    secret = webhook_secret(api_db, ch)
    mid = _sent_message(api_db, ch, None)
    for s in ("delivered", "sent", "delivered"):
        body = _hook(api, ch, _status("wa-early", s), secret).json()
        assert body["statuses"]["applied"] == 0
    with api_db.connect() as conn:
        assert conn.execute(
            text("SELECT count(*) FROM outbox.webhook_status_backlog")).scalar() == 2
    # The dispatcher records the id it got back (what db/queries.py COMPLETE does).
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.messages SET status = 'sent', wa_message_id = 'wa-early', "
                          "sent_at = now() WHERE id = :id"), {"id": mid})
    # The next webhook for the channel (any id) applies the backlog ...
    _hook(api, ch, _status("wa-unrelated", "read"), secret)
    assert _message(api_db, mid).status == "delivered"
    with api_db.connect() as conn:
        left = conn.execute(
            text("SELECT wa_message_id FROM outbox.webhook_status_backlog")).scalars()
        assert list(left) == ["wa-unrelated"]
    # ... and so does the periodic pass; old rows that never matched expire.
    with Session(api_db) as s, s.begin():
        result = apply_status_backlog(s, expire_after_seconds=0)
    assert result.expired == 1 and result.applied == 0
    with api_db.connect() as conn:
        assert conn.execute(
            text("SELECT count(*) FROM outbox.webhook_status_backlog")).scalar() == 0


def test_statuses_are_per_channel(api: httpx.Client, make_channel, api_db: Engine) -> None:
    ch1 = make_channel(name="one")
    ch2 = make_channel(name="two", phone="+15550000002")
    mid = _sent_message(api_db, ch1, "wa-same")
    _hook(api, ch2, _status("wa-same", "read"), webhook_secret(api_db, ch2))
    assert _message(api_db, mid).status == "sent"


# --- inbound -------------------------------------------------------------------------------


def _chat(engine: Engine, channel_id: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT id, unread_count, status, last_message_at, "
                                 "last_message_preview FROM outbox.chats WHERE channel_id = :c"),
                            {"c": channel_id}).one()


def _inbound_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM outbox.messages WHERE direction = 'inbound'")).scalar_one())


def test_inbound_twice_is_one_message_and_unread_once(api: httpx.Client, make_channel,
                                                      api_db: Engine) -> None:
    ch = make_channel()
    secret = webhook_secret(api_db, ch)
    first = _hook(api, ch, _inbound("in-1", body="Hello world"), secret)
    assert first.status_code == 200
    assert first.json()["messages"] == {"inserted": 1, "duplicates": 0, "echoes": 0}
    again = _hook(api, ch, _inbound("in-1", body="Hello world"), secret)
    assert again.json()["messages"] == {"inserted": 0, "duplicates": 1, "echoes": 0}
    assert _inbound_count(api_db) == 1
    chat = _chat(api_db, ch)
    assert chat.unread_count == 1
    assert chat.last_message_preview == "Hello world"
    with api_db.connect() as conn:
        m = conn.execute(text("SELECT status, type, body, payload->'text'->>'body' AS raw "
                              "FROM outbox.messages WHERE wa_message_id = 'in-1'")).one()
        contact = conn.execute(text("SELECT phone, name FROM outbox.contacts")).one()
    assert (m.status, m.type, m.body, m.raw) == ("delivered", "text", "Hello world",
                                                "Hello world")
    assert (contact.phone, contact.name) == ("+15550100009", "Gerald")

    _hook(api, ch, _inbound("in-2", body="second", ts=1712995300), secret)
    _hook(api, ch, _inbound("in-old", body="older", ts=1712990000), secret)  # out of order
    chat = _chat(api_db, ch)
    assert chat.unread_count == 3
    assert chat.last_message_preview == "second"
    assert int(chat.last_message_at.timestamp()) == 1712995300


def test_inbound_reopens_an_archived_chat(api: httpx.Client, make_channel,
                                          api_db: Engine) -> None:
    from outbox.admin.chats import archive_chat

    ch = make_channel()
    secret = webhook_secret(api_db, ch)
    _hook(api, ch, _inbound("in-a"), secret)
    chat_id = _chat(api_db, ch).id
    with Session(api_db) as s, s.begin():
        archive_chat(s, chat_id)
    assert _chat(api_db, ch).status == "archived"
    _hook(api, ch, _inbound("in-a"), secret)  # a replay doesn't reopen it
    assert _chat(api_db, ch).status == "archived"
    _hook(api, ch, _inbound("in-b", ts=1712995999), secret)
    chat = _chat(api_db, ch)
    assert chat.status == "active" and chat.unread_count == 2


def test_from_me_echo_of_our_send_does_not_duplicate(api: httpx.Client, make_channel,
                                                     api_db: Engine) -> None:
    ch = make_channel()
    secret = webhook_secret(api_db, ch)
    _sent_message(api_db, ch, "wa-ours", to="+15550100009")
    before = row_counts(api_db)
    echo = _inbound("wa-ours", from_me=True)
    echo["messages"][0]["source"] = "api"
    for _ in range(3):
        r = _hook(api, ch, echo, secret)
        assert r.status_code == 200 and r.json()["messages"]["echoes"] == 1
    assert row_counts(api_db) == before


def test_group_inbound_uses_the_group_as_the_chat(api: httpx.Client, make_channel,
                                                 api_db: Engine) -> None:
    ch = make_channel()
    payload = _inbound("in-g", chat="120363025343298765@g.us")
    payload["messages"][0]["chat_name"] = "Family"
    assert _hook(api, ch, payload, webhook_secret(api_db, ch)).status_code == 200
    with api_db.connect() as conn:
        row = conn.execute(text("SELECT c.wa_chat_id, ct.phone, ct.is_group, ct.name "
                                "FROM outbox.chats c "
                                "JOIN outbox.contacts ct ON ct.id = c.contact_id")).one()
    assert tuple(row) == ("120363025343298765@g.us", "120363025343298765@g.us", True, "Family")


def test_other_events_are_counted_and_ignored(api: httpx.Client, make_channel,
                                              api_db: Engine) -> None:
    ch = make_channel()
    before = row_counts(api_db)
    cases: list[tuple[Any, dict[str, int]]] = [
        ({"presences": [{"id": "15550100009@s.whatsapp.net", "status": "online"}],
          "event": {"type": "presences", "event": "post"}}, {"presences": 1}),
        ({"labels": [{"id": "1", "name": "VIP"}]}, {"labels": 1}),
        ({"health": {"status": {"code": 2, "text": "LAUNCH"}}}, {"health.LAUNCH": 1}),
        ({}, {}), ([], {}),
    ]
    for payload, ignored in cases:
        r = _hook(api, ch, payload, webhook_secret(api_db, ch))
        assert r.status_code == 200, (payload, r.text)
        assert r.json()["ignored"] == ignored and not r.json()["dead_lettered"]
    assert row_counts(api_db) == before


# --- auth and malformed input ---------------------------------------------------------------


def test_webhook_secret_failures_are_401_and_write_nothing(api: httpx.Client, make_channel,
                                                           api_db: Engine) -> None:
    ch = make_channel()
    other = make_channel(name="other", phone="+15550000002")
    secret = webhook_secret(api_db, ch)
    before = row_counts(api_db)
    for presented in (None, "", "wrong", secret[:-1], secret + "x", secret.upper(),
                      webhook_secret(api_db, other)):
        r = _hook(api, ch, _inbound("in-x"), presented)
        assert r.status_code == 401, presented
        assert r.json()["error"]["code"] == "unauthorized"
        assert SECRET_HEADER in r.json()["error"]["message"]
    # a bad body with a bad secret is still a 401 (nothing is parsed before auth)
    assert _hook(api, ch, b"{oops", "wrong").status_code == 401
    assert row_counts(api_db) == before


def test_unknown_or_malformed_channel_answers_like_a_wrong_secret(
        api: httpx.Client, make_channel, api_db: Engine) -> None:
    """No channel enumeration: an unknown id, with any secret (even a real
    channel's), gets the very answer a known channel gives a wrong secret."""
    ch = make_channel()
    wrong = _hook(api, ch, _inbound("in-x"), "whatever")
    before = row_counts(api_db)
    for cid in (uuid.uuid4(), "not-a-uuid", "1"):
        for secret in ("whatever", webhook_secret(api_db, ch), ""):
            r = _hook(api, cid, _inbound("in-x"), secret)
            assert (r.status_code, r.json()) == (401, wrong.json())
    assert wrong.status_code == 401
    assert row_counts(api_db) == before


def test_a_secret_planted_in_the_clear_is_refused_like_a_wrong_one(
        api: httpx.Client, make_channel, api_db: Engine) -> None:
    """Someone who can write the database stores a secret of theirs in the
    clear (as versions before 0.2 kept them): by default its webhooks get the
    very 401 a wrong secret gets, nothing is applied, and the log names the
    channel (never the secret) and what to run."""
    from structlog.testing import capture_logs

    ch = make_channel()
    real = webhook_secret(api_db, ch)
    planted = "planted-" + uuid.uuid4().hex
    store_webhook_secret(api_db, ch, planted, in_clear=True)
    wrong = _hook(api, make_channel(name="b", phone="+15550000002"), _inbound("in-x"),
                  "whatever")
    before = row_counts(api_db)
    with capture_logs() as logs:
        for presented in (planted, real, "whatever"):
            r = _hook(api, ch, _inbound("in-planted"), presented)
            assert (r.status_code, r.json()) == (401, wrong.json()), presented
    assert row_counts(api_db) == before
    refused = [e for e in logs if e["event"] == "webhook_secret_in_clear_refused"]
    assert len(refused) == 1, "logged once, not on every retry"
    assert refused[0]["channel_id"] == str(ch) and refused[0]["log_level"] == "error"
    assert "outbox tokens rotate-key" in refused[0]["fix"]
    assert planted not in repr(logs)


def test_a_secret_in_the_clear_is_accepted_when_the_setting_says_so(
        make_channel, api_db: Engine, database_url: str) -> None:
    """OUTBOX_ACCEPT_PLAINTEXT_WEBHOOK_SECRETS=true (an upgrade that can't run
    rotate-key yet): the stored secret works, anything else is still a 401,
    and a warning names the channel once."""
    from structlog.testing import capture_logs

    from outbox.api import create_app
    from tests.api_fixtures import app_settings, run_server

    ch = make_channel()
    stored = "kept-in-the-clear-" + uuid.uuid4().hex
    store_webhook_secret(api_db, ch, stored, in_clear=True)
    settings = app_settings(database_url, accept_plaintext_webhook_secrets=True)
    with (run_server(create_app(settings)) as url,
          httpx.Client(base_url=url, timeout=30, trust_env=False) as client,
          capture_logs() as logs):
        assert _hook(client, ch, _inbound("in-wrong"), stored + "x").status_code == 401
        for n in range(2):
            r = _hook(client, ch, _inbound(f"in-clear-{n}"), stored)
            assert r.status_code == 200, r.text
            assert r.json()["messages"]["inserted"] == 1
    accepted = [e for e in logs if e["event"] == "webhook_secret_in_clear_accepted"]
    assert [(e["channel_id"], e["log_level"]) for e in accepted] == [(str(ch), "warning")]
    assert stored not in repr(logs)


@pytest.mark.parametrize("content", [b"{oops", b"", b"\xff", b"42", b"\"text\"", b"[1, 2]",
                                     b"null", b'{"statuses": "not a list"}',
                                     b'{"messages": [{"id": 5}]}'])
def test_unusable_body_is_kept_as_a_dead_letter_and_answered_200(
        api: httpx.Client, make_channel, api_db: Engine, content: bytes) -> None:
    """Whapi retries anything but a 200 forever: a body we can't use is kept
    raw (once, however often it is retried) for a human, and acknowledged."""
    ch = make_channel()
    before = row_counts(api_db)
    for _ in range(2):
        r = _hook(api, ch, content, webhook_secret(api_db, ch))
        assert r.status_code == 200 and r.json()["dead_lettered"], r.text
    assert row_counts(api_db) == before
    with api_db.connect() as conn:
        rows = conn.execute(text("SELECT channel_id, body, reason FROM outbox.webhook_dead_letters")
                            ).all()
    assert [(r.channel_id, bytes(r.body)) for r in rows] == [(ch, content)]
    assert rows[0].reason


# --- concurrency -----------------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_webhooks_race_safely(live_url: str, make_channel, api_db: Engine) -> None:
    """Statuses in every order from many connections at once, and the same
    inbound message delivered many times at once: the SQL decides, not a
    read-modify-write in Python."""
    from concurrent.futures import ThreadPoolExecutor

    ch = make_channel()
    secret = webhook_secret(api_db, ch)
    mids = {f"wa-c{n}": _sent_message(api_db, ch, f"wa-c{n}", to=f"+1555040000{n}")
            for n in range(4)}
    rng = random.Random(3)
    jobs: list[dict[str, Any]] = [_status(wa, s) for wa in mids for s in PROGRESS * 5]
    jobs += [_inbound("in-dup", body="same")] * 20
    rng.shuffle(jobs)

    def post(payload: dict[str, Any]) -> int:
        with httpx.Client(base_url=live_url, trust_env=False, timeout=30) as c:
            return _hook(c, ch, payload, secret).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert set(pool.map(post, jobs)) == {200}
    assert {_message(api_db, mid).status for mid in mids.values()} == {"read"}
    assert _inbound_count(api_db) == 1
    with api_db.connect() as conn:
        unread = conn.execute(text("SELECT unread_count FROM outbox.chats WHERE wa_chat_id = "
                                   "'15550100009@s.whatsapp.net'")).scalar_one()
    assert unread == 1


async def test_apply_status_backlog_async_for_the_daemon(database_url: str, make_channel,
                                                         api_db: Engine) -> None:
    from outbox.database import make_async_engine
    from outbox.webhooks.apply import WebhookChannel, apply_status_backlog_async, process_webhook

    ch = make_channel()
    mid = _sent_message(api_db, ch, None)
    with Session(api_db) as s, s.begin():
        channel = WebhookChannel(ch, "default", webhook_secret(api_db, ch))
        assert process_webhook(s, channel, _status("wa-d", "read")).statuses_backlogged == 1
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.messages SET status = 'sent', wa_message_id = 'wa-d' "
                          "WHERE id = :id"), {"id": mid})
    engine = make_async_engine(database_url, pool_size=1)
    try:
        result = await apply_status_backlog_async(engine)
    finally:
        await engine.dispose()
    # The session's live API server applies the backlog every 5 s as well and
    # may get there first: either way the status lands exactly once.
    assert (result.applied, result.taken) in {(1, 1), (0, 0)}
    assert _message(api_db, mid).status == "read"
    with api_db.connect() as conn:
        assert conn.execute(
            text("SELECT count(*) FROM outbox.webhook_status_backlog")).scalar_one() == 0
