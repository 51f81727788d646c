"""The console over HTTP (no browser): its pages and their security
headers, the session cookie, CSRF on every state-changing route, session
fixation and sign-out; and the API routes the console needed (API keys,
users, throughput, lookup by idempotency key). Real server, real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.admin.sessions import csrf_token
from outbox.enqueue import enqueue_text
from tests.api_fixtures import auth
from tests.console_fixtures import PASSWORD
from tests.inbox_helpers import T0, chat_of, inbound, query


def _site(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/")


def sign_in(client: httpx.Client, email: str, workspace: str = "default") -> dict[str, str]:
    r = client.post("/v1/sessions", json={"workspace_id": workspace, "email": email,
                                          "password": PASSWORD})
    assert r.status_code == 201, r.text
    body: dict[str, str] = r.json()
    return body


@pytest.fixture
def user(console_user: Callable[..., str]) -> Callable[..., str]:
    return console_user


@pytest.fixture
def browser_like(console_url: str) -> Iterator[httpx.Client]:
    """A client that keeps cookies, as a browser does."""
    with httpx.Client(base_url=console_url, timeout=30, trust_env=False) as client:
        yield client


def test_pages_send_a_strict_content_security_policy(browser_like: httpx.Client, user) -> None:
    login = browser_like.get("/login")
    assert login.status_code == 200 and "text/html" in login.headers["content-type"]
    # Signed out, every other page sends the visitor to sign in, then back.
    r = browser_like.get("/chats/abc?x=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fchats%2Fabc%3Fx%3D1"
    sign_in(browser_like, user())
    for path in ("/", "/ops", f"/chats/{uuid.uuid4()}", "/login"):
        page = browser_like.get(path)
        assert page.status_code == 200, path
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        # No inline script: every <script> has a src on this origin.
        html = page.text
        assert html.count("<script") == html.count('<script src="/static/'), path
        assert " on" + "click=" not in html and "style=" not in html
    js = browser_like.get("/static/api.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert browser_like.get("/static/console.css").status_code == 200
    assert browser_like.get("/static/nothing.js").status_code == 404


def test_cookie_flags_follow_the_scheme(browser_like: httpx.Client, live_url: str, user) -> None:
    email = user()
    r = browser_like.post("/v1/sessions", json={"email": email, "password": PASSWORD})
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie
    # Served as https (its public URL), the cookie is Secure too.
    with httpx.Client(base_url=live_url, timeout=30, trust_env=False) as https_site:
        r = https_site.post("/v1/sessions", json={"email": email, "password": PASSWORD})
        assert "; secure" in r.headers["set-cookie"].lower()


def test_a_state_change_by_cookie_needs_the_csrf_token(
        browser_like: httpx.Client, user, make_channel, api_db: Engine) -> None:
    ch = make_channel()
    inbound(api_db, ch, "15550400001", "hello", name="Ines", at=T0)
    chat = chat_of(api_db, "15550400001@s.whatsapp.net")
    session = sign_in(browser_like, user())
    token = session["csrf_token"]
    assert browser_like.get("/v1/sessions/current").json()["csrf_token"] == token
    assert token == csrf_token(session["token"])

    # Reads need no token.
    assert browser_like.get(f"/v1/chats/{chat}").json()["unread_count"] == 1
    for headers in ({}, {"X-CSRF-Token": "0" * 64}, {"X-CSRF-Token": ""}):
        r = browser_like.post(f"/v1/chats/{chat}/archive", headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
        r = browser_like.post(f"/v1/chats/{chat}/messages", json={"text": "x"}, headers=headers)
        assert r.status_code == 403
    assert query(api_db, "SELECT status, unread_count FROM outbox.chats") == [("active", 1)]
    assert query(api_db, "SELECT count(*) FROM outbox.messages WHERE direction = 'outbound'"
                 ) == [(0,)]
    r = browser_like.post(f"/v1/chats/{chat}/archive", headers={"X-CSRF-Token": token})
    assert r.status_code == 200 and r.json()["status"] == "archived"
    # The same session by its bearer token carries no ambient credential: no token needed.
    r = httpx.post(f"{_site(browser_like)}/v1/chats/{chat}/unarchive",
                   headers=auth(session["token"]), trust_env=False)
    assert r.status_code == 200


def test_every_state_changing_route_refuses_a_cookie_without_the_token(
        browser_like: httpx.Client, user, api_db: Engine) -> None:
    sign_in(browser_like, user(role="admin"))
    paths = browser_like.get("/openapi.json").json()["paths"]
    checked = 0
    for path, operations in paths.items():
        if not path.startswith("/v1/") or path.startswith(("/v1/cron", "/v1/sessions")):
            continue
        for method in {m.upper() for m in operations} - {"GET", "HEAD", "OPTIONS"}:
            url = path.replace("{", "").replace("}", "")
            r = browser_like.request(method, url, json={})
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["error"]["code"] == "csrf_failed"
            checked += 1
    assert checked >= 15
    r = browser_like.delete("/v1/sessions")
    assert r.status_code == 403 and browser_like.get("/v1/sessions/current").status_code == 200


def test_sign_in_from_another_site_is_refused(browser_like: httpx.Client, user) -> None:
    email = user()
    body = {"email": email, "password": PASSWORD}
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": "null"}, {"Sec-Fetch-Site": "same-site"}):
        r = browser_like.post("/v1/sessions", json=body, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed", headers
        assert "set-cookie" not in r.headers
    own = _site(browser_like)
    r = browser_like.post("/v1/sessions", json=body,
                          headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 201


def test_session_fixation_and_sign_out(browser_like: httpx.Client, user,
                                       api_db: Engine) -> None:
    email = user()
    # A session id planted in the browser is not adopted: sign-in issues a new one.
    browser_like.cookies.set("outbox_session", "ws_planted-by-someone-else",
                            domain="127.0.0.1")
    first = sign_in(browser_like, email)
    assert browser_like.cookies["outbox_session"] == first["token"] != "ws_planted-by-someone-else"
    # Signing in again over a live session ends the old one.
    second = sign_in(browser_like, email)
    assert second["token"] != first["token"]
    assert httpx.get(f"{_site(browser_like)}/v1/sessions/current", trust_env=False,
                     headers=auth(first["token"])).status_code == 401
    assert query(api_db, "SELECT count(*) FROM outbox.sessions WHERE revoked_at IS NULL"
                 ) == [(1,)]

    r = browser_like.delete("/v1/sessions", headers={"X-CSRF-Token": second["csrf_token"]})
    assert r.status_code == 204 and "outbox_session" not in browser_like.cookies
    assert httpx.get(f"{_site(browser_like)}/v1/sessions/current", trust_env=False,
                     headers=auth(second["token"])).status_code == 401
    assert browser_like.get("/", follow_redirects=False).status_code == 303


def test_current_session_says_who(browser_like: httpx.Client, user) -> None:
    sign_in(browser_like, user("Boss@Example.com", role="admin"))
    me = browser_like.get("/v1/sessions/current").json()
    assert me["user"]["email"] == "boss@example.com" and me["user"]["role"] == "admin"
    assert "admin" in me["scopes"] and len(me["csrf_token"]) == 64


# --- the routes the console needed --------------------------------------------------


def test_api_keys_over_http(api: httpx.Client, api_key) -> None:
    admin = auth(api_key("team-a", scopes="admin"))
    r = api.post("/v1/api-keys", json={"name": "billing", "scopes": ["send"]}, headers=admin)
    assert r.status_code == 201, r.text
    new = r.json()
    assert new["key"].startswith("wo_") and new["scopes"] == ["send"]
    listed = api.get("/v1/api-keys", headers=admin).json()["api_keys"]
    mine = [k for k in listed if k["id"] == new["id"]]
    assert len(mine) == 1 and "key" not in mine[0] and mine[0]["revoked_at"] is None
    assert all(k["workspace_id"] == "team-a" for k in listed)
    # The key works until revoked; another workspace's admin can't revoke it.
    other = auth(api_key("team-b", scopes="admin"))
    assert api.delete(f"/v1/api-keys/{new['id']}", headers=other).status_code == 404
    assert api.get("/v1/messages", headers=auth(new["key"])).status_code == 403  # send only
    assert api.delete(f"/v1/api-keys/{new['id']}", headers=admin).status_code == 204
    assert api.get("/v1/messages", headers=auth(new["key"])).status_code == 401
    assert api.delete(f"/v1/api-keys/{new['id']}", headers=admin).status_code == 404
    bad = api.post("/v1/api-keys", json={"scopes": ["root"]}, headers=admin)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "scopes.0"  # the item named
    # Not an admin: no keys.
    agent = auth(api_key("team-a", scopes="read,send,chats"))
    assert api.get("/v1/api-keys", headers=agent).status_code == 403


def test_users_over_http(api: httpx.Client, api_key, browser_like: httpx.Client,
                         user) -> None:
    admin = auth(api_key("default", scopes="admin"))
    r = api.post("/v1/users", json={"email": "Vic@Example.com", "role": "viewer",
                                    "password": PASSWORD}, headers=admin)
    assert r.status_code == 201 and r.json()["email"] == "vic@example.com"
    assert "password" not in r.text and "hash" not in r.text
    dup = api.post("/v1/users", json={"email": "vic@example.com", "role": "agent",
                                      "password": PASSWORD}, headers=admin)
    assert dup.status_code == 409 and dup.json()["error"]["code"] == "user_exists"
    short = api.post("/v1/users", json={"email": "x@example.com", "role": "agent",
                                        "password": "short"}, headers=admin)
    assert short.status_code == 422 and short.json()["error"]["field"] == "password"
    vic = r.json()["id"]
    session = sign_in(browser_like, "vic@example.com")
    r = api.post(f"/v1/users/{vic}/disable", headers=admin)
    assert r.status_code == 200 and r.json()["disabled_at"] is not None
    assert browser_like.get("/v1/sessions/current").status_code == 401  # signed out now
    assert session["token"]
    other = auth(api_key("team-b", scopes="admin"))
    assert api.post(f"/v1/users/{vic}/disable", headers=other).status_code == 404
    assert [u["email"] for u in api.get("/v1/users", headers=admin).json()["users"]] == [
        "vic@example.com"]
    # An admin can't lock themselves out.
    boss = sign_in(browser_like, user("boss@example.com", role="admin"))
    me = browser_like.get("/v1/sessions/current").json()["user_id"]
    r = browser_like.post(f"/v1/users/{me}/disable", headers={"X-CSRF-Token": boss["csrf_token"]})
    assert r.status_code == 422


def test_throughput_per_minute(api: httpx.Client, api_key, make_channel,
                               api_db: Engine) -> None:
    ch = make_channel(workspace_id="team-a")
    with Session(api_db) as s, s.begin():
        for i in range(5):
            enqueue_text(s, channel_id=ch, to=f"+1555050000{i}", body="x")
    with api_db.begin() as conn:  # as the dispatcher leaves them: 3 sent, 1 failed, 1 retried
        conn.execute(text("""
            UPDATE outbox.outbox_messages SET
              status = (ARRAY['sent','sent','sent','failed','queued'])[rn],
              sent_at = CASE WHEN rn <= 3 THEN now() - make_interval(mins => CAST(rn AS int)) END,
              attempts = 1, updated_at = now()
            FROM (SELECT id AS oid, row_number() OVER (ORDER BY id) AS rn
                  FROM outbox.outbox_messages) n
            WHERE id = n.oid"""))
    admin = auth(api_key("team-a", scopes="admin"))
    body = api.get("/v1/stats/throughput", params={"minutes": 10}, headers=admin).json()
    assert len(body["series"]) == 10
    assert sum(p["sent"] for p in body["series"]) == 3
    assert sum(p["failed"] for p in body["series"]) == 1
    assert sum(p["retried"] for p in body["series"]) == 1
    assert body["channels"] == {str(ch): {"sent": 3, "failed": 1, "retried": 1}}
    assert body["series"][-1]["queued"] == 1  # the retried one waits
    other = auth(api_key("team-b", scopes="admin"))
    assert api.get("/v1/stats/throughput", headers=other).json()["channels"] == {}
    assert api.get("/v1/stats/throughput", params={"minutes": 0},
                   headers=admin).status_code == 422


def test_queue_depth_per_minute(make_channel, api_db: Engine) -> None:
    """The queue's depth at each minute's end, from the rows' own times: in
    from created_at, out when sent, failed for good or cancelled."""
    from datetime import UTC, datetime

    from outbox.admin.throughput import throughput

    ch = make_channel(workspace_id="team-a")
    theirs = make_channel(workspace_id="team-b", name="b", phone="+15550000002")
    # (created, status, left) at 11:mm:ss on a day; the window is 11:51 to 12:00.
    rows = {
        "a": ("11:40:00", "sent", "11:53:30"),       # in from before, out in 11:53
        "b": ("11:52:10", "sent", "11:52:40"),       # in and out within 11:52
        "c": ("11:54:05", "failed", "11:57:00"),
        "d": ("11:55:00", "cancelled", "11:56:30"),
        "e": ("11:30:00", "sending", None),          # in all along
        "f": ("11:58:59", "queued", None),
        "g": ("11:00:00", "sent", "11:20:00"),       # gone before the window
        "h": ("11:00:00", "failed", "11:45:00"),
    }
    ids = {}
    with Session(api_db) as s, s.begin():
        for body in rows:
            ids[body] = enqueue_text(s, channel_id=ch, to="+15550500001", body=body).message_id
        enqueue_text(s, channel_id=theirs, to="+15550500001", body="another workspace's")
    day = "2030-01-01 "
    with api_db.begin() as conn:
        for body, (came, status, left) in rows.items():
            conn.execute(text(
                "UPDATE outbox.outbox_messages SET status = :status, "
                "created_at = CAST(:came AS timestamptz), "
                "sent_at = CASE WHEN :status = 'sent' THEN CAST(:left AS timestamptz) END, "
                "updated_at = COALESCE(CAST(:left AS timestamptz), CAST(:came AS timestamptz)) "
                "WHERE message_id = :m"),
                {"status": status, "came": f"{day}{came}+00", "m": ids[body],
                 "left": f"{day}{left}+00" if left else None})
    with Session(api_db) as s:
        got = throughput(s, workspace_id="team-a", minutes=10,
                         now=datetime(2030, 1, 1, 12, 0, 30, tzinfo=UTC))
    assert [p["minute"][11:16] for p in got.series] == [
        "11:51", "11:52", "11:53", "11:54", "11:55", "11:56", "11:57", "11:58", "11:59", "12:00"]
    assert [p["queued"] for p in got.series] == [2, 2, 1, 2, 3, 2, 1, 2, 2, 2]


def test_messages_by_idempotency_key(api: httpx.Client, api_key, make_channel,
                                     api_db: Engine) -> None:
    ch = make_channel(workspace_id="team-a")
    with Session(api_db) as s, s.begin():
        enqueue_text(s, channel_id=ch, to="+15550500001", body="a", idempotency_key="order-1")
        enqueue_text(s, channel_id=ch, to="+15550500001", body="b", idempotency_key="order-2",
                     send_at=None)
    h = auth(api_key("team-a"))
    found = api.get("/v1/messages", params={"idempotency_key": "order-2"}, headers=h).json()
    assert [m["body"] for m in found["messages"]] == ["b"]
    assert api.get("/v1/messages", params={"idempotency_key": "nope"},
                   headers=h).json()["messages"] == []
    r = api.get("/v1/messages", params={"idempotency_key": "a\x00b"}, headers=h)
    assert r.status_code == 422
    assert api.get("/v1/messages", params={"idempotency_key": "order-2"},
                   headers=auth(api_key("team-b"))).json()["messages"] == []
