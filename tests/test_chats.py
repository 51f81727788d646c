"""Chats: cursor pagination on (last_message_at, id), archive, unarchive,
read; the CLI (`outbox chats`, `outbox apikey`, `outbox channel
webhook-info`) and GET /v1/chats."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.admin.chats import (
    archive_chat,
    decode_cursor,
    encode_cursor,
    list_chats,
    mark_chat_read,
    unarchive_chat,
)
from outbox.errors import InvalidInput, NotFound
from outbox.webhooks.apply import SECRET_HEADER, WebhookChannel, process_webhook
from tests.api_fixtures import auth
from tests.dispatch_helpers import cli, webhook_secrets
from tests.whapi_spec import assert_valid

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _inbound(session: Session, channel_id: uuid.UUID, n: int, *, at: datetime,
             body: str = "hi") -> None:
    ws = session.execute(text("SELECT workspace_id, webhook_secret FROM outbox.channels "
                              "WHERE id = :c"),
                         {"c": channel_id}).one()
    payload = {"messages": [{"id": f"in-{channel_id}-{n}-{at.timestamp()}", "from_me": False,
                             "type": "text", "chat_id": f"1555030{n:04d}@s.whatsapp.net",
                             "timestamp": int(at.timestamp()), "text": {"body": body}}]}
    process_webhook(session, WebhookChannel(channel_id, ws.workspace_id, ws.webhook_secret),
                    payload)


def _seed(engine: Engine, channel_id: uuid.UUID, chats: int) -> None:
    with Session(engine) as s, s.begin():
        for n in range(chats):
            # pairs share a timestamp: the id breaks the tie
            _inbound(s, channel_id, n, at=T0 + timedelta(minutes=n // 2))


def test_cursor_pages_through_every_chat_once_in_order(api_db: Engine, make_channel) -> None:
    ch = make_channel()
    _seed(api_db, ch, 25)
    with api_db.begin() as conn:  # two chats without any message sort last
        conn.execute(text("UPDATE outbox.chats SET last_message_at = NULL WHERE wa_chat_id IN "
                          "('15550300003@s.whatsapp.net', '15550300007@s.whatsapp.net')"))
    seen: list[tuple[datetime | None, uuid.UUID]] = []
    cursor = None
    with Session(api_db) as s:
        while True:
            page = list_chats(s, limit=4, cursor=cursor)
            seen += [(c.last_message_at, c.id) for c in page.chats]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert len(seen) == 25 and len({i for _, i in seen}) == 25
    dated = [x for x in seen if x[0] is not None]
    assert dated == sorted(dated, key=lambda x: (x[0], x[1]), reverse=True)
    assert [x[0] for x in seen[-2:]] == [None, None]
    assert seen[-2][1] > seen[-1][1]


def test_filters_unread_archived_channel(api_db: Engine, make_channel) -> None:
    ch1 = make_channel(name="one")
    ch2 = make_channel(name="two", phone="+15550000002")
    _seed(api_db, ch1, 3)
    _seed(api_db, ch2, 2)
    with Session(api_db) as s, s.begin():
        chats = list_chats(s, channel_id=ch1).chats
        assert len(chats) == 3 and all(c.unread_count == 1 for c in chats)
        assert mark_chat_read(s, chats[0].id) == 1
        assert archive_chat(s, chats[1].id) == "archived"
    with Session(api_db) as s, s.begin():
        # chats[0] was read, chats[1] is archived
        assert [c.id for c in list_chats(s, channel_id=ch1, unread_only=True).chats] == [
            chats[2].id]
        assert [c.id for c in list_chats(s, archived=True).chats] == [chats[1].id]
        assert len(list_chats(s).chats) == 4
        assert unarchive_chat(s, chats[1].id) == "active"
        status = s.execute(text("SELECT status FROM outbox.messages WHERE chat_id = :c"),
                           {"c": chats[0].id}).scalar_one()
        assert status == "read"


def test_bad_ids_and_cursors(api_db: Engine, make_channel) -> None:
    with Session(api_db) as s:
        for bad in ("nope", str(uuid.uuid4())):
            with pytest.raises(NotFound):
                archive_chat(s, bad)
            with pytest.raises(NotFound):
                mark_chat_read(s, bad)
        with pytest.raises(InvalidInput):
            list_chats(s, cursor="garbage!")
        with pytest.raises(InvalidInput):
            list_chats(s, limit=0)
    cid = uuid.uuid4()
    assert decode_cursor(encode_cursor(T0, cid)) == (T0, cid)
    assert decode_cursor(encode_cursor(None, cid)) == (None, cid)


def test_http_chats_listing_is_per_workspace(api: httpx.Client, api_key, api_db: Engine,
                                             make_channel) -> None:
    key = api_key("team-a")
    ch = make_channel(workspace_id="team-a")
    other = make_channel(workspace_id="team-b", name="b", phone="+15550000002")
    _seed(api_db, ch, 3)
    _seed(api_db, other, 2)
    first = api.get("/v1/chats?limit=2", headers=auth(key)).json()
    assert len(first["chats"]) == 2 and first["next_cursor"]
    rest = api.get("/v1/chats", params={"cursor": first["next_cursor"]}, headers=auth(key)).json()
    assert len(rest["chats"]) == 1 and rest["next_cursor"] is None
    assert {c["channel_id"] for c in first["chats"] + rest["chats"]} == {str(ch)}
    bad = api.get("/v1/chats?cursor=zzz", headers=auth(key))
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "cursor"
    assert api.get("/v1/chats?limit=0", headers=auth(key)).status_code == 422


# --- CLI -----------------------------------------------------------------------------------


def test_cli_chats(api_db: Engine, make_channel) -> None:
    ch = make_channel()
    _seed(api_db, ch, 3)
    out = cli("chats", "list", "--json", "--limit", "2")
    assert out.returncode == 0, out.stderr
    page = json.loads(out.stdout)
    assert len(page["chats"]) == 2 and page["next_cursor"]
    chat_id = page["chats"][0]["id"]
    assert cli("chats", "read", chat_id).returncode == 0
    assert cli("chats", "archive", chat_id).returncode == 0
    listed = json.loads(cli("chats", "list", "--archived", "--json").stdout)["chats"]
    assert [c["id"] for c in listed] == [chat_id] and listed[0]["unread_count"] == 0
    assert cli("chats", "unarchive", chat_id).returncode == 0
    unread = json.loads(cli("chats", "list", "--unread", "--json").stdout)["chats"]
    assert chat_id not in {c["id"] for c in unread} and len(unread) == 2
    table = cli("chats", "list")
    assert table.returncode == 0 and "unread" in table.stdout
    missing = cli("chats", "archive", str(uuid.uuid4()))
    assert missing.returncode == 2 and missing.stderr.startswith("error: chat")
    assert len(missing.stderr.strip().splitlines()) == 1


def test_cli_apikey_and_webhook_info(api_db: Engine, make_channel, live_url: str) -> None:
    out = cli("apikey", "create", "--workspace", "team-a", "--name", "backend")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert key.startswith("wo_") and "shown once" in out.stderr
    with httpx.Client(base_url=live_url, trust_env=False) as c:
        assert c.get("/v1/chats", headers=auth(key)).status_code == 200
    listed = cli("apikey", "list")
    assert "team-a" in listed.stdout and key not in listed.stdout
    key_id = listed.stdout.splitlines()[1].split()[0]
    assert cli("apikey", "revoke", key_id).returncode == 0
    with httpx.Client(base_url=live_url, trust_env=False) as c:
        assert c.get("/v1/chats", headers=auth(key)).status_code == 401
    assert cli("apikey", "create", "--workspace", "").returncode == 2

    ch = make_channel()
    info = cli("channel", "webhook-info", str(ch), "--json",
               env={"OUTBOX_PUBLIC_URL": "https://hooks.example.com/"})
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["url"] == f"https://hooks.example.com/webhooks/whapi/{ch}"
    assert data["header"] == SECRET_HEADER
    with api_db.connect() as conn:
        stored = conn.execute(text("SELECT webhook_secret FROM outbox.channels")).scalar()
    assert stored.startswith("v2:") and data["secret"] not in stored  # kept encrypted
    assert [data["secret"]] == list(webhook_secrets(api_db).values())
    # Every event kind the service routes, offline backlogs (put) included.
    subscribed = {(e["type"], e["method"]) for e in data["events"]}
    assert {("messages", "put"), ("statuses", "put"), ("messages", "patch"),
            ("messages", "delete"), ("chats", "patch"), ("channel", "post"),
            ("users", "delete")} <= subscribed
    assert data["mode"] == "body"
    assert_valid("settings", data["whapi_settings"])  # what Whapi's PATCH /settings takes
    (hook,) = data["whapi_settings"]["webhooks"]
    assert hook["headers"] == {SECRET_HEADER: data["secret"]} and hook["url"] == data["url"]
    method = json.loads(cli("channel", "webhook-info", str(ch), "--mode", "method",
                            "--json").stdout)
    assert method["whapi_settings"]["webhooks"][0]["mode"] == "method"
    bad_mode = cli("channel", "webhook-info", str(ch), "--mode", "carrier-pigeon")
    assert bad_mode.returncode == 2 and len(bad_mode.stderr.strip().splitlines()) == 1
    plain = cli("channel", "webhook-info", str(ch))
    assert plain.returncode == 0 and SECRET_HEADER in plain.stdout
    assert "messages (post, put, patch, delete)" in plain.stdout
    assert "OUTBOX_PUBLIC_URL is not set" in plain.stderr
    assert cli("channel", "webhook-info", str(uuid.uuid4())).returncode == 2


@pytest.mark.slow
def test_cli_serve(database_url: str, api_db: Engine) -> None:
    import os
    import socket
    import subprocess
    import sys
    import time

    from tests.dispatch_helpers import REPO

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "outbox", "serve", "--port", str(port)],
                            cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2, trust_env=False)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "outbox serve did not start"
                time.sleep(0.1)
        assert r.status_code == 200 and r.json()["status"] == "ready"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode in (0, -15)
