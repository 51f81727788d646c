"""/v1/channels over a real server: list with queues, create, replace the
token, pause, resume, webhook-info; another workspace's channel is not
found; bad input writes nothing; the Whapi token never comes back out (not
in a response, not in a log line)."""

# ruff: noqa: F811  (pytest fixtures imported from tests.api_fixtures and test_security)
from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tests.api_fixtures import api, api_db, auth, live_url, row_counts  # noqa: F401
from tests.test_security import debug_logging  # noqa: F401

WHAPI_TOKEN = "whapi-token-" + uuid.uuid4().hex


def stored_token(engine: Engine, channel_id: object) -> str:
    from tests.dispatch_helpers import channel_tokens

    return channel_tokens(engine)[uuid.UUID(str(channel_id))]


def channel_row(engine: Engine, channel_id: object) -> Any:
    with engine.connect() as conn:
        return conn.execute(text("SELECT status, paused_until, pause_reason, pause_cause "
                                 "FROM outbox.channels WHERE id = :id"),
                            {"id": channel_id}).one()


def test_list_shows_state_and_queue(api: httpx.Client, api_db: Engine, admin: Callable[..., str],
                                    make_channel: Callable[..., uuid.UUID]) -> None:
    from outbox.enqueue import enqueue_text

    busy = make_channel(name="busy")
    idle = make_channel(name="idle", phone="+15550000002")
    make_channel(name="theirs", workspace_id="team-b", phone="+15550000003")
    with Session(api_db) as s, s.begin():
        for n in range(3):
            enqueue_text(s, channel_id=busy, to=f"+1555010000{n}", body="hi")
        enqueue_text(s, channel_id=busy, to="+15550100009", body="later",
                     send_at=datetime.now(UTC) + timedelta(days=30))
    api.post(f"/v1/channels/{idle}/pause", headers=auth(admin()),
             json={"seconds": 600, "reason": "maintenance"})

    r = api.get("/v1/channels", headers=auth(admin()))
    assert r.status_code == 200, r.text
    by_name = {c["name"]: c for c in r.json()["channels"]}
    assert set(by_name) == {"busy", "idle"}  # not team-b's
    assert by_name["busy"]["status"] == "active" and by_name["busy"]["queued"] == 4
    assert by_name["busy"]["oldest_due_at"] is not None  # the scheduled one isn't due
    assert by_name["idle"] | {"paused_until": None} == {
        "id": str(idle), "workspace_id": "default", "name": "idle",
        "phone_number": "+15550000002", "base_url": None, "status": "paused",
        "paused_until": None, "pause_reason": "maintenance", "pause_cause": "manual",
        "queued": 0, "oldest_due_at": None}
    assert by_name["idle"]["paused_until"] is not None
    assert WHAPI_TOKEN not in r.text and "secret" not in r.text


def test_create_stores_the_token_and_never_shows_it(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str], debug_logging: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    r = api.post("/v1/channels", headers=auth(admin("team-a")),
                 json={"name": " Sales ", "phone_number": "+1 555 000 0042", "token": WHAPI_TOKEN,
                       "base_url": "https://gate.example.com/"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["name"] == "Sales" and body["phone_number"] == "+15550000042"
    assert body["workspace_id"] == "team-a" and body["status"] == "active"
    assert body["base_url"] == "https://gate.example.com"
    assert WHAPI_TOKEN not in r.text and "token" not in body
    assert stored_token(api_db, body["id"]) == WHAPI_TOKEN
    assert api.get("/v1/channels", headers=auth(admin("team-b"))).json() == {"channels": []}
    assert WHAPI_TOKEN not in capsys.readouterr().err


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "phone_number": "+15550000042"}, "token"),
    ({"name": "x", "phone_number": "+15550000042", "token": ""}, "token"),
    ({"name": "x", "phone_number": "+15550000042", "token": "two words"}, "token"),
    ({"name": "x", "phone_number": "+15550000042", "token": 12}, "token"),
    ({"name": "", "phone_number": "+15550000042", "token": "t"}, "name"),
    ({"name": "x", "phone_number": "not a number", "token": "t"}, "phone_number"),
    ({"name": "x", "phone_number": "120363025343298765@g.us", "token": "t"}, "phone_number"),
    ({"name": "x", "phone_number": "+15550000042", "token": "t", "base_url": "ftp://x"},
     "base_url"),
    ({"name": "x", "phone_number": "+15550000042", "token": "t", "workspace_id": "other"},
     "workspace_id"),
])
def test_create_refuses_bad_input_and_writes_nothing(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str], body: dict[str, Any],
        field: str) -> None:
    key = admin()
    before = row_counts(api_db)
    r = api.post("/v1/channels", headers=auth(key), json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"].get("field") == field, r.text
    assert row_counts(api_db) == before


def test_create_honours_the_http_base_url_setting(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str], database_url: str) -> None:
    """A plain-http base URL beyond loopback (the compose dry run's
    simulator) is refused, unless OUTBOX_ALLOW_HTTP_BASE_URL is set for the
    service: the CLI honoured it, the HTTP route didn't."""
    from outbox.api import create_app
    from tests.api_fixtures import app_settings, run_server

    key = admin()
    body = {"name": "dry run", "phone_number": "+15550000042", "token": WHAPI_TOKEN,
            "base_url": "http://simulator:8099"}
    before = row_counts(api_db)
    r = api.post("/v1/channels", headers=auth(key), json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "base_url"
    assert "OUTBOX_ALLOW_HTTP_BASE_URL" in r.json()["error"]["message"]
    assert row_counts(api_db) == before

    app = create_app(app_settings(database_url, allow_http_base_url=True))
    with run_server(app) as url, httpx.Client(base_url=url, timeout=30, trust_env=False) as c:
        r = c.post("/v1/channels", headers=auth(key), json=body)
    assert r.status_code == 201, r.text
    assert r.json()["base_url"] == "http://simulator:8099"
    assert stored_token(api_db, r.json()["id"]) == WHAPI_TOKEN


def test_replace_token_revives_a_channel_stopped_by_its_token(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str],
        make_channel: Callable[..., uuid.UUID], debug_logging: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    key = admin()
    cases = {  # status, pause cause -> status after a new token
        ("paused", "unauthorized"): "active", ("paused", "credentials"): "active",
        ("disabled", None): "active", ("paused", "manual"): "paused",
        ("paused", "rate_limit"): "paused", ("active", None): "active",
    }
    for n, ((status, cause), expected) in enumerate(cases.items()):
        ch = make_channel(phone=f"+1555000010{n}")
        with api_db.begin() as conn:
            conn.execute(text("UPDATE outbox.channels SET status = :s, pause_cause = :c, "
                              "pause_reason = CASE WHEN :s = 'paused' THEN 'why' END "
                              "WHERE id = :id"), {"s": status, "c": cause, "id": ch})
        new = f"{WHAPI_TOKEN}-{n}"
        r = api.put(f"/v1/channels/{ch}/token", headers=auth(key), json={"token": new})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == expected, (status, cause)
        assert new not in r.text and stored_token(api_db, ch) == new
        row = channel_row(api_db, ch)
        assert row.status == expected
        if expected == "active":
            assert row.pause_cause is None and row.pause_reason is None
        else:
            assert row.pause_cause == cause
    assert WHAPI_TOKEN not in capsys.readouterr().err


def test_replace_token_elsewhere_or_badly_changes_nothing(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str],
        make_channel: Callable[..., uuid.UUID]) -> None:
    ch = make_channel(workspace_id="team-a", token=WHAPI_TOKEN)
    for key, path, body, status in (
            (admin("team-b"), f"/v1/channels/{ch}/token", {"token": "new"}, 404),
            (admin("team-a"), f"/v1/channels/{uuid.uuid4()}/token", {"token": "new"}, 404),
            (admin("team-a"), "/v1/channels/nope/token", {"token": "new"}, 422),
            (admin("team-a"), f"/v1/channels/{ch}/token", {"token": " "}, 422),
            (admin("team-a"), f"/v1/channels/{ch}/token", {"token": "a", "x": 1}, 422),
            (admin("team-a"), f"/v1/channels/{ch}/token", {}, 422)):
        r = api.put(path, headers=auth(key), json=body)
        assert r.status_code == status, (path, body, r.text)
    assert stored_token(api_db, ch) == WHAPI_TOKEN


def test_pause_and_resume(api: httpx.Client, api_db: Engine, admin: Callable[..., str],
                          make_channel: Callable[..., uuid.UUID]) -> None:
    ch = make_channel(workspace_id="team-a")
    key = admin("team-a")
    r = api.post(f"/v1/channels/{ch}/pause", headers=auth(key))
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["paused_until"], r.json()["pause_reason"]) == (
        "paused", None, "paused by an admin")
    r = api.post(f"/v1/channels/{ch}/pause", headers=auth(key),
                 json={"seconds": 30, "reason": "deploy"})
    assert r.json()["paused_until"] is not None and r.json()["pause_reason"] == "deploy"
    r = api.post(f"/v1/channels/{ch}/resume", headers=auth(key))
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert channel_row(api_db, ch).pause_reason is None

    other = admin("team-b")
    for path in (f"/v1/channels/{ch}/pause", f"/v1/channels/{ch}/resume"):
        r = api.post(path, headers=auth(other))
        assert r.status_code == 404 and r.json()["error"]["code"] == "channel_not_found"
    for body in ({"seconds": 0}, {"seconds": -5}, {"seconds": 10**12}, {"seconds": "soon"},
                 {"reason": "x" * 501}, {"reason": "nul\x00"}, {"until": 5}, [1]):
        r = api.post(f"/v1/channels/{ch}/pause", headers=auth(key), json=body)
        assert r.status_code == 422, (body, r.text)
    assert channel_row(api_db, ch).status == "active"


def test_webhook_info(api: httpx.Client, api_db: Engine, admin: Callable[..., str],
                      make_channel: Callable[..., uuid.UUID]) -> None:
    from outbox.webhooks.apply import SECRET_HEADER
    from tests.api_fixtures import webhook_secret

    ch = make_channel(workspace_id="team-a")
    r = api.get(f"/v1/channels/{ch}/webhook-info", headers=auth(admin("team-a")),
                params={"mode": "path"})
    assert r.status_code == 200, r.text
    info = r.json()
    # The shared server's OUTBOX_PUBLIC_URL (tests/api_fixtures.py).
    assert info["url"] == f"https://outbox.example.com/webhooks/whapi/{ch}"
    assert info["header"] == SECRET_HEADER and info["secret"] == webhook_secret(api_db, ch)
    assert info["mode"] == "path" and info["whapi_settings"]["webhooks"][0]["mode"] == "path"
    assert api.get(f"/v1/channels/{ch}/webhook-info", headers=auth(admin("team-b"))
                   ).status_code == 404
    assert api.get(f"/v1/channels/{ch}/webhook-info", headers=auth(admin("team-a")),
                   params={"mode": "pigeon"}).status_code == 422
