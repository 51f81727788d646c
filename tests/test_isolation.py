"""Workspace isolation, on every read and write path.

Two workspaces, A and B, each with an API key, a channel, queued messages,
an inbound conversation (chat + contact) and a backlogged status. A's
credentials are used against B's ids on every endpoint that takes one, and
A's ids under B's webhook: always 404 (or 401), the same answer as for an id
that does not exist (no existence oracle), nothing of B's in any response,
and B's rows byte-for-byte unchanged. The library's workspace filter
(`workspace_id=`) is held to the same rule.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.errors import ChannelNotFound, NotFound
from outbox.webhooks.apply import SECRET_HEADER
from tests.api_fixtures import CRON_SECRET, auth
from tests.conftest import TEST_KEY
from tests.dispatch_helpers import webhook_secrets

B_TEXTS = ("b-private-text-1", "b-private-text-2", "b-inbound-body", "B Contact Name",
           "b-idem-1", "b-wa-in-1", "b-wa-out-1", "b-status-early")


@dataclass
class Workspace:
    name: str
    key: str
    channel: uuid.UUID
    secret: str
    messages: list[str]
    chat: uuid.UUID
    contact_phone: str


def _workspace(engine: Engine, name: str, phone: str, prefix: str) -> Workspace:
    from outbox.admin.apikeys import create_api_key
    from outbox.admin.channels import create_channel
    from outbox.enqueue import enqueue_text
    from outbox.webhooks.apply import find_webhook_channel, process_webhook

    with Session(engine) as s, s.begin():
        channel = create_channel(s, name=f"{name}-channel", phone_number=phone,
                                 token=f"{prefix}-token-" + "z" * 20, encryption_key=TEST_KEY,
                                 workspace_id=name).id
        key = create_api_key(s, workspace_id=name, name=f"{name} key").key
        messages = [str(enqueue_text(s, channel_id=channel, to="+15550100001",
                                     body=f"{prefix}-private-text-{n}",
                                     idempotency_key=f"{prefix}-idem-{n}",
                                     workspace_id=name).message_id) for n in (1, 2)]
        # One of them "sent", with a WhatsApp id that statuses can name.
        s.execute(text("UPDATE outbox.messages SET status = 'sent', wa_message_id = :w "
                       "WHERE id = :id"), {"w": f"{prefix}-wa-out-1", "id": messages[0]})
    with Session(engine) as s, s.begin():
        wc = find_webhook_channel(s, str(channel))
        process_webhook(s, wc, {
            "messages": [{"id": f"{prefix}-wa-in-1", "from_me": False, "type": "text",
                          "chat_id": "15550100009@s.whatsapp.net", "timestamp": 1712995245,
                          "text": {"body": f"{prefix}-inbound-body"},
                          "from_name": f"{prefix.upper()} Contact Name"}],
            "statuses": [{"id": f"{prefix}-status-early", "status": "read"}]})
    with engine.connect() as conn:
        secret = webhook_secrets(engine)[channel]
        chat = conn.execute(text("SELECT id FROM outbox.chats WHERE channel_id = :c AND "
                                 "wa_chat_id = '15550100009@s.whatsapp.net'"),
                            {"c": channel}).scalar_one()
    return Workspace(name, key, channel, secret, messages, chat, "+15550100009")


@dataclass
class Pair:
    engine: Engine
    a: Workspace
    b: Workspace


@pytest.fixture
def pair(api_db: Engine) -> Pair:
    return Pair(api_db, _workspace(api_db, "team-a", "+15550007001", "a"),
                _workspace(api_db, "team-b", "+15550007002", "b"))


@pytest.fixture
def client(live_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, timeout=30, trust_env=False) as c:
        yield c


_B_ROWS = text("""
SELECT md5(string_agg(r, '|' ORDER BY r)) FROM (
    SELECT row_to_json(c)::text AS r FROM outbox.channels c WHERE c.workspace_id = 'team-b'
    UNION ALL SELECT row_to_json(k)::text FROM outbox.channel_tokens k
        JOIN outbox.channels c ON c.id = k.channel_id WHERE c.workspace_id = 'team-b'
    UNION ALL SELECT row_to_json(x)::text FROM outbox.contacts x WHERE x.workspace_id = 'team-b'
    UNION ALL SELECT row_to_json(x)::text FROM outbox.chats x WHERE x.workspace_id = 'team-b'
    UNION ALL SELECT row_to_json(x)::text FROM outbox.messages x WHERE x.workspace_id = 'team-b'
    UNION ALL SELECT row_to_json(x)::text FROM outbox.outbox_messages x
        WHERE x.workspace_id = 'team-b'
    UNION ALL SELECT row_to_json(x)::text FROM outbox.api_keys x WHERE x.workspace_id = 'team-b'
    UNION ALL SELECT row_to_json(b)::text FROM outbox.webhook_status_backlog b
        JOIN outbox.channels c ON c.id = b.channel_id WHERE c.workspace_id = 'team-b'
) rows
""")


def b_rows(engine: Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(_B_ROWS).scalar_one())


def assert_nothing_of_b(p: Pair, r: httpx.Response) -> None:
    sent = (str(r.request.url) + r.request.content.decode("utf-8", "replace")).lower()
    needles = [*B_TEXTS, str(p.b.channel), str(p.b.chat), *p.b.messages, p.b.secret,
               p.b.key, p.b.key.split("_")[1]]
    for needle in needles:
        # An id the request itself carried may be echoed back ("message X does not exist").
        if needle.lower() in sent or needle.replace("-", "").lower() in sent:
            continue
        assert needle not in r.text, (needle, r.request.url, r.text[:300])


def _error(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    return dict(body["error"])


def _same_as_unknown(client: httpx.Client, r: httpx.Response, method: str, path: str,
                     real_id: str, **kwargs: Any) -> None:
    """B's id gets the answer a random id gets (status and code): no oracle."""
    fake = str(uuid.uuid4())
    path = path.replace(real_id, fake)
    if "json" in kwargs:
        kwargs["json"] = json.loads(json.dumps(kwargs["json"]).replace(real_id, fake))
    other = client.request(method, path, **kwargs)
    assert (other.status_code, _error(other)["code"]) == (r.status_code, _error(r)["code"])


# --- HTTP: reads ------------------------------------------------------------------------------


def test_a_cannot_read_b_messages(pair: Pair, client: httpx.Client) -> None:
    p = pair
    before = b_rows(p.engine)
    for mid in p.b.messages:
        for spelling in (mid, mid.upper(), "{" + mid + "}", mid.replace("-", ""),
                         f"urn:uuid:{mid}"):
            r = client.get(f"/v1/messages/{spelling}", headers=auth(p.a.key))
            assert r.status_code == 404, r.text
            assert _error(r)["code"] == "message_not_found"
            assert_nothing_of_b(p, r)
        _same_as_unknown(client, r, "GET", f"/v1/messages/{mid}", mid, headers=auth(p.a.key))
    # B's chat id is not a message id either; and A still reads its own.
    r = client.get(f"/v1/messages/{p.b.chat}", headers=auth(p.a.key))
    assert r.status_code == 404
    own = client.get(f"/v1/messages/{p.a.messages[0]}", headers=auth(p.a.key))
    assert own.status_code == 200 and own.json()["channel_id"] == str(p.a.channel)
    assert_nothing_of_b(p, own)
    # B reads its own with its own key (the ids are real).
    assert client.get(f"/v1/messages/{p.b.messages[0]}",
                      headers=auth(p.b.key)).status_code == 200
    assert b_rows(p.engine) == before


def test_a_chats_listing_never_shows_b(pair: Pair, client: httpx.Client) -> None:
    from outbox.admin.chats import encode_cursor

    p = pair
    with p.engine.connect() as conn:
        b_chat_at = conn.execute(text("SELECT last_message_at FROM outbox.chats WHERE id = :id"),
                                 {"id": p.b.chat}).scalar_one()
    queries: list[dict[str, Any]] = [
        {}, {"channel_id": str(p.b.channel)}, {"channel_id": str(p.b.channel).upper()},
        {"unread": "true"}, {"archived": "true"}, {"limit": 500},
        {"channel_id": str(p.b.channel), "unread": "true"},
        # A cursor pointing into B's rows: keyset pagination must still filter by workspace.
        {"cursor": encode_cursor(b_chat_at, p.b.chat)},
        {"cursor": encode_cursor(None, uuid.UUID("ffffffff-ffff-ffff-ffff-ffffffffffff"))},
        {"cursor": encode_cursor(b_chat_at, p.b.chat), "channel_id": str(p.b.channel)},
    ]
    for params in queries:
        r = client.get("/v1/chats", params=params, headers=auth(p.a.key))
        assert r.status_code in (200, 404), (params, r.text)
        if r.status_code == 200:
            chats = r.json()["chats"]
            assert all(c["channel_id"] == str(p.a.channel) for c in chats), params
            if "channel_id" in params:
                assert chats == [], params
        assert_nothing_of_b(p, r)
    mine = client.get("/v1/chats", headers=auth(p.a.key)).json()["chats"]
    assert [c["channel_id"] for c in mine] == [str(p.a.channel)] * len(mine) and mine
    theirs = client.get("/v1/chats", headers=auth(p.b.key)).json()["chats"]
    assert {c["channel_id"] for c in theirs} == {str(p.b.channel)}
    assert str(p.b.chat) in {c["id"] for c in theirs}
    assert not {c["id"] for c in theirs} & {c["id"] for c in mine}


def test_pages_of_a_never_reach_b(pair: Pair, client: httpx.Client) -> None:
    """Walk A's listing one chat per page to the end: every page is A's."""
    p = pair
    seen = []
    cursor = None
    for _ in range(20):
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        r = client.get("/v1/chats", params=params, headers=auth(p.a.key))
        assert r.status_code == 200
        page = r.json()
        seen += [c["channel_id"] for c in page["chats"]]
        assert_nothing_of_b(p, r)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen and set(seen) == {str(p.a.channel)}


# --- HTTP: writes -----------------------------------------------------------------------------


def test_a_cannot_send_through_b_channel(pair: Pair, client: httpx.Client) -> None:
    p = pair
    before = b_rows(p.engine)
    bodies: list[dict[str, Any]] = [
        {"channel_id": str(p.b.channel), "to": "+15550100001", "text": "hijack"},
        {"channel_id": str(p.b.channel).upper(), "to": "+15550100001", "text": "hijack"},
        {"channel_id": "{" + str(p.b.channel) + "}", "to": "+15550100001", "text": "hijack"},
        {"channel_id": str(p.b.channel), "to": "+15550100001", "text": "hijack",
         "idempotency_key": "b-idem-1"},  # B's key on B's channel: must not return B's message
        {"channel_id": str(p.b.channel), "to": "+15550100002", "media_type": "image",
         "media": "https://e.com/x.png"},
    ]
    for body in bodies:
        r = client.post("/v1/messages", json=body, headers=auth(p.a.key))
        assert r.status_code == 404, r.text
        assert _error(r)["code"] == "channel_not_found"
        assert_nothing_of_b(p, r)
    _same_as_unknown(client, r, "POST", "/v1/messages", str(p.b.channel), json=bodies[0],
                     headers=auth(p.a.key))
    # B's idempotency key on A's own channel is just a new message of A's.
    r = client.post("/v1/messages", json={"channel_id": str(p.a.channel), "to": "+15550100001",
                                          "text": "mine", "idempotency_key": "b-idem-1"},
                    headers=auth(p.a.key))
    assert r.status_code == 201 and r.json()["message_id"] not in p.b.messages
    assert r.json()["duplicate"] is False
    assert b_rows(p.engine) == before


def test_webhooks_are_per_channel_secret(pair: Pair, client: httpx.Client) -> None:
    p = pair
    before = b_rows(p.engine)
    payloads: list[Any] = [
        {"statuses": [{"id": "b-wa-out-1", "status": "read"}]},
        {"messages": [{"id": "evil-1", "from_me": False, "type": "text",
                       "chat_id": "15550100009@s.whatsapp.net", "text": {"body": "evil"},
                       "from_name": "Mallory"}]},
    ]
    for payload in payloads:
        for headers in ({SECRET_HEADER: p.a.secret}, {SECRET_HEADER: p.a.key},
                        {"Authorization": f"Bearer {p.a.key}"},
                        {SECRET_HEADER: p.a.secret, "Authorization": f"Bearer {p.b.key}"},
                        {SECRET_HEADER: p.b.secret[:-1]}):
            r = client.post(f"/webhooks/whapi/{p.b.channel}", json=payload, headers=headers)
            assert r.status_code == 401, (headers.keys(), r.text)
            assert_nothing_of_b(p, r)
    assert b_rows(p.engine) == before


def test_a_webhook_cannot_touch_b_rows(pair: Pair, client: httpx.Client) -> None:
    """On A's own channel (A's secret), naming B's WhatsApp ids and B's
    contact: statuses don't move B's message, inbound doesn't rename or
    reopen B's contact/chat; the backlog applier never crosses channels."""
    from outbox.webhooks.apply import apply_status_backlog

    p = pair
    before = b_rows(p.engine)
    payload = {
        "statuses": [{"id": "b-wa-out-1", "status": "read"},
                     {"id": "b-status-early", "status": "read"},
                     {"id": "b-wa-in-1", "status": "deleted"}],
        "messages": [{"id": "b-wa-in-1", "from_me": False, "type": "text",
                      "chat_id": "15550100009@s.whatsapp.net", "timestamp": 1712999999,
                      "text": {"body": "overwrite?"}, "from_name": "Renamed"}],
    }
    r = client.post(f"/webhooks/whapi/{p.a.channel}", json=payload,
                    headers={SECRET_HEADER: p.a.secret})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["statuses"]["applied"] == 0 and body["messages"]["inserted"] == 1
    assert_nothing_of_b(p, r)
    # A now has a message with B's WhatsApp id "b-wa-out-1"? No: but give it one, then
    # let the backlog applier run; B's early status must stay B's.
    with Session(p.engine) as s, s.begin():
        s.execute(text("UPDATE outbox.messages SET wa_message_id = 'b-status-early' "
                       "WHERE id = :id"),
                  {"id": p.a.messages[1]})
    with Session(p.engine) as s, s.begin():
        apply_status_backlog(s)
    assert b_rows(p.engine) == before


def test_cron_rejects_api_keys(pair: Pair, client: httpx.Client) -> None:
    p = pair
    before = b_rows(p.engine)
    for headers in (auth(p.a.key), auth(p.b.key), {SECRET_HEADER: p.a.secret},
                    auth(p.a.secret), auth(CRON_SECRET[:-1])):
        r = client.post("/v1/cron/dispatch", headers=headers)
        assert r.status_code == 401 and _error(r)["code"] == "unauthorized"
        assert_nothing_of_b(p, r)
    assert b_rows(p.engine) == before


def test_one_key_one_workspace(pair: Pair, client: httpx.Client) -> None:
    """A key can't be stretched: B's key with A's prefix, A's key with B's secret part."""
    p = pair
    _, a_prefix, a_secret = p.a.key.split("_", 2)
    _, b_prefix, b_secret = p.b.key.split("_", 2)
    for forged in (f"wo_{a_prefix}_{b_secret}", f"wo_{b_prefix}_{a_secret}",
                   f"wo_{a_prefix}{b_prefix}_{a_secret}", f"{p.a.key},{p.b.key}",
                   f"{p.a.key} {p.b.key}"):
        r = client.get("/v1/chats", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401, forged
        assert_nothing_of_b(p, r)


# --- the library ------------------------------------------------------------------------------


def test_library_enqueue_with_b_channel_is_channel_not_found(pair: Pair) -> None:
    from outbox.enqueue import enqueue_many, enqueue_media, enqueue_text
    from outbox.message_types import TextMessage

    p = pair
    before = b_rows(p.engine)
    calls = [
        lambda s: enqueue_text(s, channel_id=p.b.channel, to="+15550100001", body="x",
                               workspace_id="team-a"),
        lambda s: enqueue_text(s, channel_id=str(p.b.channel), to="+15550100001", body="x",
                               idempotency_key="b-idem-1", workspace_id="team-a"),
        lambda s: enqueue_media(s, channel_id=p.b.channel, to="+15550100001",
                                media_type="image", media="https://e.com/a.png",
                                workspace_id="team-a"),
        lambda s: enqueue_many(s, [TextMessage(p.a.channel, "+15550100001", "ok"),
                                   TextMessage(p.b.channel, "+15550100001", "x")],
                               workspace_id="team-a"),
        lambda s: enqueue_text(s, channel_id=p.b.channel, to="+15550100001", body="x",
                               workspace_id="team-a "),  # not trimmed into a match
        lambda s: enqueue_text(s, channel_id=p.b.channel, to="+15550100001", body="x",
                               workspace_id="TEAM-B"),
    ]
    for call in calls:
        with Session(p.engine) as s, s.begin():
            with pytest.raises(ChannelNotFound):
                call(s)
            count = s.execute(text("SELECT count(*) FROM outbox.messages WHERE body = 'ok'")
                              ).scalar_one()
            assert count == 0  # all or nothing: A's half of the batch isn't written either
    assert b_rows(p.engine) == before


async def test_library_async_enqueue_with_b_channel(pair: Pair, database_url: str) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession

    from outbox.database import make_async_engine
    from outbox.enqueue import enqueue_text

    p = pair
    engine = make_async_engine(database_url, pool_size=1)
    try:
        async with AsyncSession(engine) as s, s.begin():
            with pytest.raises(ChannelNotFound):
                await enqueue_text(s, channel_id=p.b.channel, to="+15550100001", body="x",
                                   workspace_id="team-a")
    finally:
        await engine.dispose()


def test_library_channel_and_chat_operations_filter_by_workspace(pair: Pair) -> None:
    from outbox.admin.apikeys import list_api_keys
    from outbox.admin.channels import get_channel, list_channels, pause_channel, resume_channel
    from outbox.admin.chats import archive_chat, list_chats, mark_chat_read, unarchive_chat

    p = pair
    before = b_rows(p.engine)
    with Session(p.engine) as s, s.begin():
        for op in (lambda: get_channel(s, p.b.channel, workspace_id="team-a"),
                   lambda: pause_channel(s, p.b.channel, workspace_id="team-a"),
                   lambda: resume_channel(s, p.b.channel, workspace_id="team-a")):
            with pytest.raises(ChannelNotFound):
                op()
        for op2 in (lambda: archive_chat(s, p.b.chat, workspace_id="team-a"),
                    lambda: unarchive_chat(s, p.b.chat, workspace_id="team-a"),
                    lambda: mark_chat_read(s, p.b.chat, workspace_id="team-a")):
            with pytest.raises(NotFound):
                op2()
        assert [c.id for c in list_channels(s, workspace_id="team-a")] == [p.a.channel]
        assert {k.workspace_id for k in list_api_keys(s, workspace_id="team-a")} == {"team-a"}
        page = list_chats(s, workspace_id="team-a", channel_id=p.b.channel)
        assert page.chats == []
        assert {c.channel_id for c in list_chats(s, workspace_id="team-a").chats} == {
            p.a.channel}
    assert b_rows(p.engine) == before


def test_isolation_holds_after_everything(pair: Pair, client: httpx.Client) -> None:
    """B, with its own key, still sees exactly its own data (the fixtures
    worked, so the 404s above mean isolation, not absence)."""
    p = pair
    r = client.get(f"/v1/messages/{p.b.messages[1]}", headers=auth(p.b.key))
    assert r.status_code == 200 and r.json()["idempotency_key"] == "b-idem-2"
    chats = client.get("/v1/chats", headers=auth(p.b.key)).json()["chats"]
    assert [c["id"] for c in chats if c["id"] == str(p.b.chat)]
    assert all(c["channel_id"] == str(p.b.channel) for c in chats)
    assert any(c["name"] == "B Contact Name" for c in chats)
