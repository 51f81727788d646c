"""The inbox over HTTP: the chat list (search, filters, assignment), one
chat, its thread with cursors both ways, archive; contacts. Real server,
real PostgreSQL; another workspace's ids are 404, bad input a 4xx that
writes nothing."""

# ruff: noqa: F811  (pytest fixtures imported from tests.api_fixtures)
from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.admin.chats import list_chats
from outbox.enqueue import enqueue_text
from tests.api_fixtures import api, api_db, api_key, auth, live_url, row_counts  # noqa: F401
from tests.inbox_helpers import T0, chat_of, inbound, query

GROUP = "120363025343298765@g.us"

# An agent's key: reading, sending and managing chats (outbox/admin/access.py).
AGENT = "read,send,chats"


@pytest.fixture
def team(api_db: Engine, make_channel, api_key) -> tuple[str, uuid.UUID, str]:
    """Workspace team-a (a key and a channel with four chats) and team-b's key."""
    ch = make_channel(workspace_id="team-a")
    make_channel(workspace_id="team-b", name="b", phone="+15550000002")
    inbound(api_db, ch, "15550300001", "hola", name="Maria Silva", at=T0)
    inbound(api_db, ch, "15550300002", "oi", name="Mario Rossi", at=T0 + timedelta(minutes=1))
    inbound(api_db, ch, "15550300003", "hey", name="Bob 100%", at=T0 + timedelta(minutes=2))
    inbound(api_db, ch, GROUP, "all", group_name="Team", at=T0 + timedelta(minutes=3))
    return api_key("team-a", scopes=AGENT), ch, api_key("team-b", scopes=AGENT)


def _names(response: httpx.Response) -> list[str | None]:
    assert response.status_code == 200, response.text
    return [c["name"] for c in response.json()["chats"]]


def test_chat_list_search_and_filters(api: httpx.Client, team, api_db: Engine) -> None:
    key, _, other = team
    h = auth(key)
    assert _names(api.get("/v1/chats", headers=h)) == ["Team", "Bob 100%", "Mario Rossi",
                                                        "Maria Silva"]
    assert _names(api.get("/v1/chats", params={"q": "mar"}, headers=h)) == [
        "Mario Rossi", "Maria Silva"]
    assert _names(api.get("/v1/chats", params={"q": "MARIA"}, headers=h)) == ["Maria Silva"]
    assert _names(api.get("/v1/chats", params={"q": "+1 555 0300 002"}, headers=h)) == [
        "Mario Rossi"]
    assert _names(api.get("/v1/chats", params={"q": "1555030000"}, headers=h)) == [
        "Bob 100%", "Mario Rossi", "Maria Silva"]
    assert _names(api.get("/v1/chats", params={"q": "120363"}, headers=h)) == ["Team"]
    # LIKE's wildcards are the characters themselves.
    assert _names(api.get("/v1/chats", params={"q": "%"}, headers=h)) == []
    assert _names(api.get("/v1/chats", params={"q": "bob 100%"}, headers=h)) == ["Bob 100%"]
    assert _names(api.get("/v1/chats", params={"is_group": "true"}, headers=h)) == ["Team"]
    assert len(_names(api.get("/v1/chats", params={"is_group": "false"}, headers=h))) == 3
    # The other workspace sees none of it.
    assert _names(api.get("/v1/chats", params={"q": "mar"}, headers=auth(other))) == []

    # A search pages like the list.
    first = api.get("/v1/chats", params={"q": "mar", "limit": 1}, headers=h).json()
    rest = api.get("/v1/chats", params={"q": "mar", "cursor": first["next_cursor"]},
                   headers=h).json()
    assert [c["name"] for c in first["chats"] + rest["chats"]] == ["Mario Rossi", "Maria Silva"]
    assert rest["next_cursor"] is None

    bob = chat_of(api_db, "15550300003@s.whatsapp.net")
    assert api.post(f"/v1/chats/{bob}/archive", headers=h).json() == {
        "chat_id": bob, "status": "archived"}
    assert "Bob 100%" not in _names(api.get("/v1/chats", headers=h))
    assert _names(api.get("/v1/chats", params={"archived": "true"}, headers=h)) == ["Bob 100%"]
    assert len(_names(api.get("/v1/chats", params={"include_archived": "true"},
                              headers=h))) == 4
    assert api.post(f"/v1/chats/{bob}/unarchive", headers=h).json()["status"] == "active"

    before = row_counts(api_db)
    for params in ({"q": "x" * 101}, {"is_group": "maybe"}, {"cursor": "zzz"}, {"limit": 0},
                   {"assigned_to": "somebody"}, {"assigned_to": "me"}):
        bad = api.get("/v1/chats", params=params, headers=h)
        assert bad.status_code == 422, (params, bad.text)
        assert bad.json()["error"]["field"] == next(iter(params)), bad.text
    assert row_counts(api_db) == before


def _user(engine: Engine, workspace: str, email: str, *, disabled: bool = False) -> str:
    from outbox.admin.users import create_user, disable_user

    with Session(engine) as s, s.begin():
        user = create_user(s, workspace_id=workspace, email=email, role="agent",
                           password="correct horse battery staple")
        if disabled:
            disable_user(s, workspace_id=workspace, email=user.email)
    return str(user.id)


def test_assign_and_filter_by_assignee(api: httpx.Client, team, api_db: Engine) -> None:
    key, _, other = team
    h = auth(key)
    maria = chat_of(api_db, "15550300001@s.whatsapp.net")
    agent = _user(api_db, "team-a", "agent@example.com")
    assigned = api.patch(f"/v1/chats/{maria}", json={"assigned_to": agent}, headers=h)
    assert assigned.status_code == 200, assigned.text
    assert assigned.json()["assigned_to"] == agent
    assert _names(api.get("/v1/chats", params={"assigned_to": agent}, headers=h)) == [
        "Maria Silva"]
    assert "Maria Silva" not in _names(api.get("/v1/chats", params={"assigned_to": "none"},
                                               headers=h))
    assert len(_names(api.get("/v1/chats", params={"assigned_to": "none"}, headers=h))) == 3

    # Another workspace's key can't see or change it.
    for call in (lambda c: c.patch(f"/v1/chats/{maria}", json={"assigned_to": None},
                                   headers=auth(other)),
                 lambda c: c.get(f"/v1/chats/{maria}", headers=auth(other))):
        missing = call(api)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "chat_not_found"
    assert query(api_db, "SELECT assigned_to FROM outbox.chats WHERE id = :c",
                 c=maria)[0].assigned_to == uuid.UUID(agent)

    # Bad bodies change nothing; `me` needs a user (an API key is none).
    for body, field in (({"assigned_to": "nobody"}, "assigned_to"), ({}, "assigned_to"),
                        ({"assigned_to": "me"}, "assigned_to"),
                        ({"assigned_to": agent, "x": 1}, "x")):
        bad = api.patch(f"/v1/chats/{maria}", json=body, headers=h)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == field, bad.text
    assert api.patch(f"/v1/chats/{maria}", content=b"{", headers=h).status_code == 400
    assert api.get(f"/v1/chats/{maria}", headers=h).json()["assigned_to"] == agent

    # The assignee is an active user of the chat's workspace: not a made-up
    # id, another workspace's user or a disabled one. 422, nothing written.
    nobodies = (str(uuid.uuid4()), _user(api_db, "team-b", "b@example.com"),
                _user(api_db, "team-a", "gone@example.com", disabled=True))
    before = row_counts(api_db), query(api_db, "SELECT * FROM outbox.chats ORDER BY id")
    for nobody in nobodies:
        bad = api.patch(f"/v1/chats/{maria}", json={"assigned_to": nobody}, headers=h)
        assert bad.status_code == 422, bad.text
        assert bad.json()["error"]["field"] == "assigned_to"
        assert "not an active user" in bad.json()["error"]["message"]
    assert (row_counts(api_db), query(api_db, "SELECT * FROM outbox.chats ORDER BY id")
            ) == before

    unassigned = api.patch(f"/v1/chats/{maria}", json={"assigned_to": None}, headers=h)
    assert unassigned.status_code == 200 and unassigned.json()["assigned_to"] is None
    assert _names(api.get("/v1/chats", params={"assigned_to": agent}, headers=h)) == []


def test_chat_detail(api: httpx.Client, team, api_db: Engine) -> None:
    key, _, other = team
    maria = chat_of(api_db, "15550300001@s.whatsapp.net")
    inbound(api_db, team[1], "15550300001", "¿hay stock?", name="Maria Silva",
            at=T0 + timedelta(minutes=9))
    detail = api.get(f"/v1/chats/{maria}", headers=auth(key))
    assert detail.status_code == 200, detail.text
    d = detail.json()
    assert (d["unread_count"], d["status"], d["is_group"]) == (2, "active", False)
    assert d["contact"]["name"] == "Maria Silva" and d["contact"]["phone"] == "+15550300001"
    assert d["contact"]["tags"] == [] and d["contact"]["id"] == d["contact_id"]
    last = d["last_message"]
    assert (last["body"], last["direction"], last["status"]) == ("¿hay stock?", "inbound",
                                                                 "delivered")
    for chat_id in (maria, str(uuid.uuid4()), "not-a-uuid"):
        for path in ("", "/messages"):
            assert api.get(f"/v1/chats/{chat_id}{path}",
                           headers=auth(other)).status_code == 404


def test_thread_pages_both_ways(api: httpx.Client, team, api_db: Engine) -> None:
    key, ch, other = team
    h = auth(key)
    for n in range(24):
        inbound(api_db, ch, "15550300009", f"m{n:02d}", at=T0 + timedelta(minutes=n))
    chat = chat_of(api_db, "15550300009@s.whatsapp.net")
    seen: list[str] = []
    params: dict[str, str | int] = {"limit": 10}
    first = None
    while True:
        page = api.get(f"/v1/chats/{chat}/messages", params=params, headers=h)
        assert page.status_code == 200, page.text
        body = page.json()
        first = first or body
        seen += [m["body"] for m in body["messages"]]
        if body["before_cursor"] is None:
            break
        params = {"limit": 10, "before": body["before_cursor"]}
    assert seen == [f"m{n:02d}" for n in range(23, -1, -1)]  # newest first, each once

    # What arrived since the first page, read forward from its newest.
    for n in range(24, 27):
        inbound(api_db, ch, "15550300009", f"m{n:02d}")
    newer = api.get(f"/v1/chats/{chat}/messages",
                    params={"after": first["after_cursor"], "limit": 2}, headers=h).json()
    assert [m["body"] for m in newer["messages"]] == ["m25", "m24"]
    rest = api.get(f"/v1/chats/{chat}/messages", params={"after": newer["after_cursor"]},
                   headers=h).json()
    assert [m["body"] for m in rest["messages"]] == ["m26"]
    nothing = api.get(f"/v1/chats/{chat}/messages", params={"after": rest["after_cursor"]},
                      headers=h).json()
    assert nothing["messages"] == [] and nothing["after_cursor"] == rest["after_cursor"]

    # Reactions (without the removed ones), edits and deletes are marked.
    with api_db.begin() as conn:
        conn.execute(text(
            "UPDATE outbox.messages SET reactions = CAST(:r AS jsonb), edited_at = now(), "
            "edit_history = '[{\"body\": \"m2\"}]' WHERE body = 'm26'"),
            {"r": '{"1555": {"emoji": "👍", "at": 1}, "1556": {"emoji": "", "at": 2}}'})
        conn.execute(text("UPDATE outbox.messages SET deleted_at = now() WHERE body = 'm25'"))
    top = api.get(f"/v1/chats/{chat}/messages", params={"limit": 2}, headers=h).json()
    m26, m25 = top["messages"]
    assert m26["reactions"] == {"1555": {"emoji": "👍", "at": 1}} and m26["edited"]
    assert m26["direction"] == "inbound" and m26["payload"]["text"]["body"] == "m26"
    assert m25["deleted"] and m25["body"] is None and m25["payload"] == {}

    for params, field in (({"before": "zzz"}, "before"), ({"after": "zzz"}, "after"),
                          ({"before": first["before_cursor"], "after": first["after_cursor"]},
                           "after"), ({"limit": 501}, "limit")):
        bad = api.get(f"/v1/chats/{chat}/messages", params=params, headers=h)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == field, bad.text
    assert api.get(f"/v1/chats/{chat}/messages", headers=auth(other)).status_code == 404


def test_archive_unarchive_read_other_workspace(api: httpx.Client, team,
                                                api_db: Engine) -> None:
    key, _, other = team
    maria = chat_of(api_db, "15550300001@s.whatsapp.net")
    for action in ("archive", "unarchive", "read"):
        assert api.post(f"/v1/chats/{maria}/{action}", headers=auth(other)).status_code == 404
        assert api.post(f"/v1/chats/{uuid.uuid4()}/{action}",
                        headers=auth(key)).status_code == 404
    assert query(api_db, "SELECT status, unread_count FROM outbox.chats WHERE id = :c",
                 c=maria) == [("active", 1)]
    assert query(api_db, "SELECT count(*) FROM outbox.outbox_messages") == [(0,)]


# --- contacts ------------------------------------------------------------------------------


def test_contacts_list_get_patch(api: httpx.Client, team, api_db: Engine) -> None:
    key, ch, other = team
    h = auth(key)
    listed = api.get("/v1/contacts", headers=h)
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["contacts"]) == 4
    found = api.get("/v1/contacts", params={"q": "mar", "limit": 1}, headers=h).json()
    more = api.get("/v1/contacts", params={"q": "mar", "cursor": found["next_cursor"]},
                   headers=h).json()
    assert sorted(c["name"] for c in found["contacts"] + more["contacts"]) == [
        "Maria Silva", "Mario Rossi"]
    assert more["next_cursor"] is None
    assert api.get("/v1/contacts", params={"q": "mar"}, headers=auth(other)).json()[
        "contacts"] == []

    maria = next(c for c in found["contacts"] + more["contacts"] if c["name"] == "Maria Silva")
    detail = api.get(f"/v1/contacts/{maria['id']}", headers=h).json()
    assert [c["id"] for c in detail["chats"]] == [chat_of(api_db, "15550300001@s.whatsapp.net")]
    assert detail["chats"][0]["channel_id"] == str(ch)

    changed = api.patch(f"/v1/contacts/{maria['id']}", headers=h, json={
        "email": "maria@example.com", "notes": "VIP\nprefers mornings",
        "tags": ["vip", " vip", "sp"]})
    assert changed.status_code == 200, changed.text
    c = changed.json()
    assert (c["name"], c["email"], c["notes"], c["tags"]) == (
        "Maria Silva", "maria@example.com", "VIP\nprefers mornings", ["vip", "sp"])
    cleared = api.patch(f"/v1/contacts/{maria['id']}", headers=h, json={"email": None}).json()
    assert cleared["email"] is None and cleared["tags"] == ["vip", "sp"]

    before = row_counts(api_db), query(api_db, "SELECT * FROM outbox.contacts ORDER BY id")
    for body, field in (({"email": "not-an-address"}, "email"), ({"tags": None}, "tags"),
                        ({"tags": ["x" * 51]}, "tags"), ({"phone": "+1"}, "phone"),
                        ({"name": "x" * 201}, "name"), ({"tags": "vip"}, "tags")):
        bad = api.patch(f"/v1/contacts/{maria['id']}", json=body, headers=h)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == field, (body, bad.text)
    for params, field in (({"cursor": "zzz"}, "cursor"), ({"cursor": "bm9wZXxub3BlCg"}, "cursor"),
                          ({"limit": 0}, "limit"), ({"limit": 501}, "limit"),
                          ({"limit": "ten"}, "limit"), ({"q": "x" * 101}, "q")):
        bad = api.get("/v1/contacts", params=params, headers=h)
        assert (bad.status_code, bad.json()["error"]["code"], bad.json()["error"]["field"]) == (
            422, "invalid_input", field), (params, bad.text)
    for contact_id in (maria["id"], "nope"):
        assert api.patch(f"/v1/contacts/{contact_id}", json={"name": "x"},
                         headers=auth(other)).status_code == 404
        assert api.get(f"/v1/contacts/{contact_id}", headers=auth(other)).status_code == 404
    assert (row_counts(api_db), query(api_db, "SELECT * FROM outbox.contacts ORDER BY id")
            ) == before


def test_inbound_sender_name_fills_an_empty_name_only(api: httpx.Client, api_db: Engine,
                                                      make_channel, api_key) -> None:
    ch = make_channel()
    with Session(api_db) as s, s.begin():
        enqueue_text(s, channel_id=ch, to="+15550300020", body="hello")
    contact = query(api_db, "SELECT id, name FROM outbox.contacts")[0]
    assert contact.name is None
    inbound(api_db, ch, "15550300020", "hi!", name="Ana")
    assert query(api_db, "SELECT name FROM outbox.contacts") == [("Ana",)]
    key = api_key(scopes=AGENT)
    assert api.patch(f"/v1/contacts/{contact.id}", json={"name": "Ana Lopez"},
                     headers=auth(key)).status_code == 200
    inbound(api_db, ch, "15550300020", "again", name="Ana L.")
    assert query(api_db, "SELECT name FROM outbox.contacts") == [("Ana Lopez",)]


@pytest.mark.parametrize("few", [2_000, 1], ids=["contacts-first", "list-walk"])
def test_a_search_finds_the_same_either_way(api_db: Engine, team, few: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Few matches read their chats directly; many walk the list: one answer.
    (The CLI's view, every workspace, runs the same statements.)"""
    from outbox.admin import chats

    monkeypatch.setattr(chats, "FEW_MATCHES", few)
    with Session(api_db) as s:
        assert [c.name for c in list_chats(s, q="mar", include_archived=True).chats] == [
            "Mario Rossi", "Maria Silva"]
        assert [c.name for c in list_chats(s, q="+1 555 0300 003").chats] == ["Bob 100%"]
        page = list_chats(s, q="1555", limit=2, workspace_id="team-a")
        rest = list_chats(s, q="1555", cursor=page.next_cursor, workspace_id="team-a")
        assert [c.name for c in page.chats + rest.chats] == [
            "Bob 100%", "Mario Rossi", "Maria Silva"]
        assert list_chats(s, q="mar", is_group=True).chats == []


def test_a_broad_search_walks_a_bounded_stretch_per_page(api_db: Engine, team,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Past FEW_MATCHES a page walks at most SEARCH_WALK chats of the list:
    a page may come back short, even empty, with a cursor, and following
    the cursors gives every match once, in order."""
    from outbox.admin import chats

    monkeypatch.setattr(chats, "FEW_MATCHES", 1)
    monkeypatch.setattr(chats, "SEARCH_WALK", 2)

    def pages(q: str, limit: int) -> list[list[str | None]]:
        found, cursor = [], None
        with Session(api_db) as s:
            while True:
                page = list_chats(s, q=q, limit=limit, cursor=cursor, workspace_id="team-a")
                assert len(page.chats) <= limit
                found.append([c.name for c in page.chats])
                if page.next_cursor is None:
                    return found
                cursor = page.next_cursor

    # The list: Team (a group), Bob, Mario, Maria. "mar" matches the last two,
    # so the first walk (Team, Bob) finds nothing and says where it stopped.
    assert pages("mar", 5) == [[], ["Mario Rossi", "Maria Silva"], []]
    assert pages("1555", 2) == [["Bob 100%"], ["Mario Rossi", "Maria Silva"], []]
    assert pages("1555", 1) == [["Bob 100%"], ["Mario Rossi"], ["Maria Silva"]]
