"""Users, sessions and scopes, through a real server and the CLI: sign in
(bearer and cookie), sign out, expiry, revocation, no user enumeration,
sign-in limits, and every route's scope (403 insufficient_scope)."""

# ruff: noqa: F811  (pytest fixtures imported from tests.api_fixtures)
from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.admin.sessions import csrf_token
from tests.api_fixtures import api_db, api_key, app_settings, auth, row_counts, run_server  # noqa: F401
from tests.dispatch_helpers import cli

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def server(database_url: str) -> Iterator[tuple[Any, str]]:
    """A server of this module's own: its sign-in limits start full here,
    whatever other modules did to the shared one's."""
    from outbox.api import create_app

    app = create_app(app_settings(database_url))
    with run_server(app) as url:
        yield app, url


@pytest.fixture
def client(server: tuple[Any, str], api_db: Engine) -> Iterator[httpx.Client]:
    from outbox.api.limits import LoginLimits

    app, url = server
    app.state.outbox.login_limits = LoginLimits()
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as c:
        yield c


@pytest.fixture
def user(api_db: Engine) -> Callable[..., str]:
    """Add a user; returns the (lower-cased) email."""
    from outbox.admin.users import create_user

    def _make(role: str = "agent", *, email: str | None = None,
              workspace: str = "default") -> str:
        with Session(api_db) as s, s.begin():
            return create_user(s, workspace_id=workspace, email=email or f"{role}@example.com",
                               role=role, password=PASSWORD).email

    return _make


def sign_in(c: httpx.Client, email: str, password: str = PASSWORD,
            workspace: str = "default") -> httpx.Response:
    return c.post("/v1/sessions", json={"workspace_id": workspace, "email": email,
                                        "password": password})


def session_token(c: httpx.Client, email: str, workspace: str = "default") -> str:
    r = sign_in(c, email, workspace=workspace)
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


# --- signing in and out -------------------------------------------------------------------


def test_sign_in_gives_a_token_for_the_header_and_the_cookie(
        client: httpx.Client, user: Callable[..., str], api_db: Engine) -> None:
    email = user("agent", email="  Agent.Smith@Example.COM ")
    assert email == "agent.smith@example.com"
    r = sign_in(client, "AGENT.smith@example.com")  # any case signs in
    assert r.status_code == 201, r.text
    body = r.json()
    token = body["token"]
    assert token.startswith("ws_")
    assert body["user"]["email"] == email and body["user"]["role"] == "agent"
    assert body["scopes"] == ["chats", "read", "send"]
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith(f"outbox_session={token.lower()};")
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" in cookie
    assert "path=/" in cookie and "max-age=43200" in cookie

    who = client.get("/v1/sessions/current", headers=auth(token))
    assert who.status_code == 200 and who.json()["scopes"] == ["chats", "read", "send"]
    by_cookie = client.get("/v1/sessions/current", headers={"Cookie": f"outbox_session={token}"})
    assert by_cookie.status_code == 200 and by_cookie.json() == who.json()
    assert client.get("/v1/chats", headers=auth(token)).status_code == 200

    # Only the token's hash is stored; the password only as Argon2id.
    with api_db.connect() as conn:
        stored = conn.execute(text("SELECT token_hash FROM outbox.sessions")).scalar_one()
        pw_hash = conn.execute(text("SELECT password_hash FROM outbox.users")).scalar_one()
        dump = str(conn.execute(text("SELECT s.*, u.* FROM outbox.sessions s "
                                     "JOIN outbox.users u ON u.id = s.user_id")).all())
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert pw_hash.startswith("$argon2id$")
    assert token not in dump and PASSWORD not in dump


def test_sign_out_ends_the_session(client: httpx.Client, user: Callable[..., str],
                                   api_key: Callable[..., str]) -> None:
    email = user("viewer")
    token, other = session_token(client, email), session_token(client, email)
    cookie = {"Cookie": f"outbox_session={token}"}
    # By the cookie, a change needs the session's CSRF token (outbox/api/auth.py).
    assert client.delete("/v1/sessions", headers=cookie).status_code == 403
    r = client.delete("/v1/sessions", headers=cookie | {"X-CSRF-Token": csrf_token(token)})
    assert r.status_code == 204
    assert 'outbox_session=""' in r.headers["set-cookie"] and "Max-Age=0" in r.headers[
        "set-cookie"]
    for headers in (auth(token), {"Cookie": f"outbox_session={token}"}):
        gone = client.get("/v1/sessions/current", headers=headers)
        assert gone.status_code == 401 and gone.json()["error"]["code"] == "unauthorized"
    # The user's other session is untouched.
    assert client.get("/v1/sessions/current", headers=auth(other)).status_code == 200
    # An API key is not a session: nothing to sign out.
    r = client.delete("/v1/sessions", headers=auth(api_key()))
    assert r.status_code == 422 and "API key" in r.json()["error"]["message"]


def test_expired_revoked_and_disabled_sessions_are_refused(
        client: httpx.Client, user: Callable[..., str], api_db: Engine) -> None:
    email = user("agent")
    expired, revoked, live = (session_token(client, email) for _ in range(3))
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.sessions SET expires_at = now() - interval '1 second' "
                          "WHERE token_hash = :h"), {"h": hashlib.sha256(expired.encode())
                                                     .hexdigest()})
        conn.execute(text("UPDATE outbox.sessions SET revoked_at = now() WHERE token_hash = :h"),
                     {"h": hashlib.sha256(revoked.encode()).hexdigest()})
    for token in (expired, revoked, "ws_" + "A" * 43, "ws_"):
        r = client.get("/v1/chats", headers=auth(token))
        assert r.status_code == 401, token
        assert r.json()["error"]["message"] == "invalid, expired or revoked session; sign in again"
    assert client.get("/v1/chats", headers=auth(live)).status_code == 200
    # A session token is not a key: the cookie carries only sessions.
    assert client.get("/v1/chats", headers={"Cookie": "outbox_session=wo_x_y"}).status_code == 401

    out = cli("user", "disable", "--workspace", "default", "--email", email.upper())
    assert out.returncode == 0, out.stderr
    assert client.get("/v1/chats", headers=auth(live)).status_code == 401
    assert sign_in(client, email).status_code == 401


def test_every_failure_is_the_same_answer(client: httpx.Client, user: Callable[..., str],
                                          api_db: Engine) -> None:
    """Unknown workspace, unknown email, wrong password, disabled user: one 401."""
    email = user("admin")
    disabled = user("agent", email="gone@example.com")
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.users SET disabled_at = now() WHERE email = :e"),
                     {"e": disabled})
    answers = [sign_in(client, "nobody@example.com"), sign_in(client, email, "wrong password!"),
               sign_in(client, disabled), sign_in(client, email, workspace="elsewhere")]
    assert {(r.status_code, r.text) for r in answers} == {
        (401, '{"error":{"code":"unauthorized","message":"wrong email or password"}}')}
    assert sign_in(client, email).status_code == 201


def test_bad_sign_in_input_writes_nothing(client: httpx.Client, user: Callable[..., str],
                                          api_db: Engine) -> None:
    email = user("agent")
    before = row_counts(api_db)
    cases: list[tuple[Any, int, str]] = [
        ({"email": email}, 422, "invalid_input"),
        ({"email": email, "password": PASSWORD, "remember": True}, 422, "invalid_input"),
        ({"email": 5, "password": PASSWORD}, 422, "invalid_input"),
        ({"email": "not-an-address", "password": PASSWORD}, 422, "invalid_input"),
        ({"email": email, "password": "x" * 2000}, 422, "invalid_input"),
        ({"email": email, "password": PASSWORD, "workspace_id": "w" * 101}, 422,
         "invalid_input"),
        ([], 422, "invalid_input"),
    ]
    for body, status, code in cases:
        r = client.post("/v1/sessions", json=body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), body
    r = client.post("/v1/sessions", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert row_counts(api_db) == before


@pytest.mark.slow  # over a second
def test_sign_in_is_limited_per_account_and_per_address(
        client: httpx.Client, server: tuple[Any, str], user: Callable[..., str]) -> None:
    from outbox.api.limits import LOGIN_ACCOUNT_BURST, LOGIN_ADDRESS_PER_SECOND, KeyRateLimiter

    email, other = user("agent"), user("viewer")
    for _ in range(LOGIN_ACCOUNT_BURST):
        assert sign_in(client, email, "wrong password!").status_code == 401
    locked = sign_in(client, email)  # even the right password waits now
    assert locked.status_code == 429 and locked.json()["error"]["code"] == "rate_limited"
    assert int(locked.headers["retry-after"]) >= 1
    assert "account" in locked.json()["error"]["message"]
    # Unknown accounts are counted the same (no telling them apart by the limit).
    for _ in range(LOGIN_ACCOUNT_BURST):
        assert sign_in(client, "ghost@example.com").status_code == 401
    assert sign_in(client, "ghost@example.com").status_code == 429
    assert sign_in(client, other).status_code == 201  # another account is not locked

    # The address: a smaller burst for the test, the real bucket.
    app, _ = server
    app.state.outbox.login_limits.per_address = KeyRateLimiter(LOGIN_ADDRESS_PER_SECOND, 2)
    assert sign_in(client, other).status_code == 201
    assert sign_in(client, "someone@example.com").status_code == 401
    r = sign_in(client, "someone.else@example.com")
    assert r.status_code == 429 and "address" in r.json()["error"]["message"]


# --- scopes --------------------------------------------------------------------------------


def _key(api_db: Engine, scopes: str, workspace: str = "default") -> str:
    from outbox.admin.apikeys import create_api_key

    with Session(api_db) as s, s.begin():
        return create_api_key(s, workspace_id=workspace, scopes=scopes).key


#: /v1 routes that need no scope: any signed-in user (their own session).
ANY_CALLER = {("GET", "/v1/sessions/current"), ("DELETE", "/v1/sessions")}
#: /v1 routes with credentials of their own: signing in, the cron secret.
OWN_CREDENTIALS = {("POST", "/v1/sessions"), ("POST", "/v1/cron/dispatch")}


def _demands(route: Any) -> frozenset[Any] | None:
    """The scopes a route's dependencies demand (an empty set: any
    authenticated caller), or None when it authenticates no caller."""
    from outbox.api.auth import DEMANDS, authenticate_caller

    found: frozenset[Any] | None = None
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if dep.call in DEMANDS:
            found = (found or frozenset()) | DEMANDS[dep.call]
        elif dep.call is authenticate_caller:
            found = found or frozenset()
        stack.extend(dep.dependencies)
    return found


def _api_routes(routes: Any) -> Iterator[Any]:
    from fastapi.routing import APIRoute

    for r in routes:
        if isinstance(r, APIRoute):
            yield r
        elif hasattr(r, "original_router"):  # an included router (FastAPI 0.16x wraps them)
            yield from _api_routes(r.original_router.routes)


def _v1_routes(app: Any) -> list[tuple[str, str, frozenset[Any] | None]]:
    return [(method, r.path, _demands(r)) for r in _api_routes(app.routes)
            if r.path.startswith("/v1/") for method in sorted(r.methods)]


def _unguarded(app: Any) -> list[str]:
    """/v1 routes that declare no scope and aren't known to need none."""
    return [f"{method} {path}" for method, path, needed in _v1_routes(app)
            if (method, path) not in OWN_CREDENTIALS
            and (needed is None or (not needed and (method, path) not in ANY_CALLER))]


def test_every_v1_route_declares_a_scope(server: tuple[Any, str]) -> None:
    from fastapi import FastAPI

    app, _ = server
    paths = {(method, path) for method, path, _ in _v1_routes(app)}
    assert {("GET", "/v1/chats"), ("POST", "/v1/users"), *ANY_CALLER, *OWN_CREDENTIALS} <= paths
    assert _unguarded(app) == []
    for method, path, needed in _v1_routes(app):
        if (method, path) in OWN_CREDENTIALS:
            assert needed is None, (method, path)  # no API key or session is asked for
    # A route added without one is caught.
    bare = FastAPI()
    bare.router.routes.extend(app.routes)
    bare.get("/v1/forgotten")(lambda: {})
    assert _unguarded(bare) == ["GET /v1/forgotten"]


@pytest.mark.slow  # over a second
def test_every_route_demands_its_scope(client: httpx.Client, server: tuple[Any, str],
                                       user: Callable[..., str], api_db: Engine,
                                       make_channel: Callable[..., uuid.UUID],
                                       api_key: Callable[..., str]) -> None:
    """Walks the app's route table: every /v1 route, every caller lacking its
    scope gets 403 insufficient_scope naming it, and nothing is written;
    a caller holding it gets past the check."""
    from outbox.admin.access import ROLE_SCOPES, Principal, parse_scopes

    app, _ = server
    ch = make_channel()
    callers: dict[str, tuple[str, Principal]] = {}
    for role in ROLE_SCOPES:
        callers[role] = (session_token(client, user(role)),
                         Principal("default", ROLE_SCOPES[role], user_id=uuid.uuid4()))
    for scopes in ("read", "send", "chats", "read,send", "admin"):
        callers[f"key:{scopes}"] = (_key(api_db, scopes),
                                    Principal("default", parse_scopes(scopes),
                                              api_key_id=uuid.uuid4()))
    routes = [(m, p, needed) for m, p, needed in _v1_routes(app) if needed]
    assert len(routes) >= 30, routes
    refused = 0
    for method, template, needed in routes:
        # Real-looking ids; the channel a real one (the check comes first anyway).
        path = re.sub(r"\{(\w+)\}", lambda m: str(ch) if m[1] == "channel_id"
                      else str(uuid.uuid4()), template)
        for who, (token, principal) in callers.items():
            held = all(principal.allows(s) for s in needed)
            if held and template == "/v1/events/stream":
                continue  # it would stream until the heartbeat; test_events_api.py reads it
            before = row_counts(api_db)
            r = client.request(method, path, headers=auth(token))
            if held:
                assert r.status_code != 403, (who, method, path, r.text)
                continue
            assert r.status_code == 403, (who, method, path, r.text)
            err = r.json()["error"]
            assert err["code"] == "insufficient_scope", (who, method, path, err)
            assert all(s.value in err["message"] for s in needed if not principal.allows(s))
            assert row_counts(api_db) == before, (who, method, path)
            refused += 1
    assert refused >= len(routes)  # every route refused someone
    # A key made before scopes existed reads and sends, as it always did.
    send = {"channel_id": str(ch), "to": "+15550100001", "text": "hi"}
    old = api_key()
    assert client.get("/v1/chats", headers=auth(old)).status_code == 200
    assert client.post("/v1/messages", headers=auth(old), json=send).status_code == 201


def test_session_of_another_workspace_sees_nothing_of_this_one(
        client: httpx.Client, user: Callable[..., str],
        make_channel: Callable[..., uuid.UUID]) -> None:
    ch = make_channel(workspace_id="team-a")
    token = session_token(client, user("admin", workspace="team-b"), workspace="team-b")
    assert client.get("/v1/channels", headers=auth(token)).json() == {"channels": []}
    r = client.post(f"/v1/channels/{ch}/pause", headers=auth(token))
    assert r.status_code == 404 and r.json()["error"]["code"] == "channel_not_found"
    r = client.post("/v1/messages", headers=auth(token),
                    json={"channel_id": str(ch), "to": "+15550100001", "text": "hi"})
    assert r.status_code == 404


# --- the CLI ------------------------------------------------------------------------------


def test_cli_user_add_list_disable(api_db: Engine, client: httpx.Client) -> None:
    out = cli("user", "add", "--workspace", "acme", "--email", "Ann@Example.com", "--role",
              "agent", input=PASSWORD + "\n")
    assert out.returncode == 0, out.stderr
    user_id = uuid.UUID(out.stdout.strip())
    assert "ann@example.com (agent)" in out.stderr and PASSWORD not in out.stdout + out.stderr
    assert sign_in(client, "ann@example.com", workspace="acme").status_code == 201

    again = cli("user", "add", "--workspace", "acme", "--email", "ann@example.com", "--role",
                "viewer", input=PASSWORD + "\n")
    assert again.returncode == 2 and again.stderr == (
        "error: workspace 'acme' already has a user ann@example.com\n")
    for args, stdin in ((("--role", "agent"), "short\n"), (("--role", "owner"), PASSWORD),
                        (("--role", "admin"), "")):
        bad = cli("user", "add", "--workspace", "acme", "--email", "bob@example.com", *args,
                  input=stdin)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    bad_email = cli("user", "add", "--workspace", "acme", "--email", "bob", "--role", "agent",
                    input=PASSWORD)
    assert bad_email.returncode == 2 and "email" in bad_email.stderr

    listed = cli("user", "list", "--workspace", "acme")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[0].split() == ["id", "workspace", "email", "role",
                                                     "created", "disabled"]
    (row,) = listed.stdout.splitlines()[1:]
    assert row.split()[:4] == [str(user_id), "acme", "ann@example.com", "agent"]
    assert "argon2" not in listed.stdout

    assert cli("user", "disable", "--workspace", "acme", "--email", "ann@example.com"
               ).returncode == 0
    assert len(cli("user", "list").stdout.splitlines()[1].split()) == 6  # disabled at
    missing = cli("user", "disable", "--workspace", "acme", "--email", "zed@example.com")
    assert missing.returncode == 2 and "no user zed@example.com" in missing.stderr
    assert sign_in(client, "ann@example.com", workspace="acme").status_code == 401


def test_cli_apikey_scopes(api_db: Engine, client: httpx.Client) -> None:
    out = cli("apikey", "create", "--workspace", "acme", "--scope", "read,admin", "--name", "a")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert "(scopes: admin,read)" in out.stderr
    assert client.get("/v1/channels", headers=auth(key)).status_code == 200
    default = cli("apikey", "create", "--workspace", "acme", "--name", "b").stdout.strip()
    r = client.get("/v1/channels", headers=auth(default))
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    listed = cli("apikey", "list", "--workspace", "acme").stdout.splitlines()
    assert listed[0].split()[4] == "scopes"
    assert sorted(line.split()[4] for line in listed[1:]) == ["admin,read", "read,send"]
    for scope in ("write", "", ","):
        bad = cli("apikey", "create", "--workspace", "acme", "--scope", scope)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, scope
    # The refused ones wrote nothing.
    assert len(cli("apikey", "list", "--workspace", "acme").stdout.splitlines()) == 3


def test_scope_names_match_the_schema() -> None:
    from outbox.admin.access import ROLE_SCOPES
    from outbox.db.states import Role

    assert set(ROLE_SCOPES) == {r.value for r in Role}
