"""Messages over HTTP: list (the dead letters too), detail with content,
cancel (and its race with a dispatcher), retry, batch; sending into a chat;
read receipts reaching the simulator as PUT /messages/{id}."""

# ruff: noqa: F811  (pytest fixtures imported from tests.api_fixtures / sim_fixtures)
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.admin.messages import cancel
from outbox.enqueue import enqueue_many
from outbox.errors import AlreadySending, AlreadySent
from outbox.message_types import TextMessage
from outbox.providers.simulator.control import SimulatorControl, SimulatorHandle
from tests.api_fixtures import (  # noqa: F401
    api,
    api_db,
    api_key,
    auth,
    live_url,
    row_counts,
    wait_for,
)
from tests.dispatch_helpers import REPO, cli, run_dispatcher, sent_by_body
from tests.inbox_helpers import chat_of, inbound, query, wire_webhooks
from tests.sim_fixtures import new_token, strict_ctl, strict_sim  # noqa: F401

# An agent's key: reading, sending and managing chats (outbox/admin/access.py).
AGENT = "read,send,chats"


@pytest.fixture
def ws(api_db: Engine, make_channel, api_key, sim_url) -> tuple[str, uuid.UUID, str, uuid.UUID]:
    """team-a's key and channel (sending to the simulator), team-b's key and channel."""
    return (api_key("team-a", scopes=AGENT), make_channel(workspace_id="team-a", base_url=sim_url),
            api_key("team-b", scopes=AGENT), make_channel(workspace_id="team-b", name="b",
                                            phone="+15550000002"))


def _queue(engine: Engine, channel: uuid.UUID, n: int, *, workspace: str = "team-a",
           prefix: str = "m") -> list[str]:
    with Session(engine) as s, s.begin():
        results = enqueue_many(s, [TextMessage(channel, f"+1555040{i % 50:04d}",
                                               f"{prefix}{i:04d}") for i in range(n)],
                               workspace_id=workspace)
    return [str(r.message_id) for r in results]


def test_list_and_detail(api: httpx.Client, ws, api_db: Engine) -> None:
    key, ch, other, other_ch = ws
    h = auth(key)
    ids = _queue(api_db, ch, 5)
    _queue(api_db, other_ch, 2, workspace="team-b")
    inbound(api_db, ch, "15550400001", "a reply")
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.outbox_messages SET status = 'failed', "
                          "last_error = 'HTTP 400: bad' WHERE message_id = :m"), {"m": ids[1]})
        conn.execute(text("UPDATE outbox.messages SET status = 'failed', error = 'HTTP 400' "
                          "WHERE id = :m"), {"m": ids[1]})
    listed = api.get("/v1/messages", headers=h)
    assert listed.status_code == 200, listed.text
    messages = listed.json()["messages"]
    assert len(messages) == 6 and messages[0]["direction"] == "inbound"
    assert {m["message_id"] for m in messages[1:]} == set(ids)
    keys = [(m["created_at"], m["message_id"]) for m in messages]
    assert keys == sorted(keys, reverse=True)  # newest first (one batch: by id)
    dead = api.get("/v1/messages", params={"status": "failed"}, headers=h).json()["messages"]
    assert [(m["message_id"], m["outbox_status"], m["last_error"]) for m in dead] == [
        (ids[1], "failed", "HTTP 400: bad")]
    chat = api.get(f"/v1/messages/{ids[0]}", headers=h).json()["chat_id"]  # +15550400000's
    assert [m["message_id"] for m in api.get("/v1/messages", params={"chat_id": chat},
                                             headers=h).json()["messages"]] == [ids[0]]
    assert len(api.get("/v1/messages", params={"channel_id": str(ch)},
                       headers=h).json()["messages"]) == 6
    assert api.get("/v1/messages", params={"channel_id": str(other_ch)},
                   headers=h).json()["messages"] == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert api.get("/v1/messages", params={"since": future}, headers=h).json()["messages"] == []
    page = api.get("/v1/messages", params={"limit": 4}, headers=h).json()
    rest = api.get("/v1/messages", params={"cursor": page["next_cursor"]}, headers=h).json()
    assert [m["message_id"] for m in page["messages"] + rest["messages"]] == [
        m["message_id"] for m in messages] and rest["next_cursor"] is None
    for params, field in (({"status": "lost"}, "status"), ({"since": "yesterday"}, "since"),
                          ({"since": "2026-01-01T00:00:00"}, "since"),
                          ({"chat_id": "x"}, "chat_id"), ({"channel_id": "x"}, "channel_id"),
                          ({"cursor": "x"}, "cursor")):
        bad = api.get("/v1/messages", params=params, headers=h)
        assert bad.status_code == 422 and bad.json()["error"]["field"] == field, bad.text

    detail = api.get(f"/v1/messages/{ids[0]}", headers=h).json()
    assert (detail["body"], detail["payload"], detail["status"]) == (
        "m0000", {"body": "m0000"}, "pending")
    assert api.get(f"/v1/messages/{ids[0]}", headers=auth(other)).status_code == 404


def test_cancel_and_retry(api: httpx.Client, ws, api_db: Engine, sim, sim_url) -> None:
    key, ch, other, _ = ws
    h = auth(key)
    ids = _queue(api_db, ch, 4)
    before = row_counts(api_db)
    for message_id in (ids[0], str(uuid.uuid4()), "nope"):
        missing = api.delete(f"/v1/messages/{message_id}", headers=auth(other))
        assert missing.status_code == 404 and missing.json()["error"]["code"] == (
            "message_not_found")
    assert row_counts(api_db) == before

    done = api.delete(f"/v1/messages/{ids[0]}", headers=h)
    assert done.status_code == 200 and done.json() == {"message_id": ids[0],
                                                        "status": "cancelled"}
    assert api.delete(f"/v1/messages/{ids[0]}", headers=h).status_code == 200  # again: same
    with api_db.begin() as conn:  # a claimed row, as the dispatcher leaves it mid-send
        conn.execute(text("UPDATE outbox.outbox_messages SET status = 'sending' "
                          "WHERE message_id = :m"), {"m": ids[1]})
    busy = api.delete(f"/v1/messages/{ids[1]}", headers=h)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "already_sending"
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.outbox_messages SET status = 'queued' "
                          "WHERE message_id = :m"), {"m": ids[1]})

    assert asyncio.run(run_dispatcher(str(api_db.url.render_as_string(hide_password=False)))
                       ).sent == 3
    assert "m0000" not in sent_by_body(sim)
    assert query(api_db, "SELECT status FROM outbox.messages WHERE id = :m", m=ids[0]) == [
        ("cancelled",)]
    late = api.delete(f"/v1/messages/{ids[2]}", headers=h)
    assert late.status_code == 409 and late.json()["error"]["code"] == "already_sent"
    reply = inbound(api_db, ch, "15550400001", "hi")
    (inbound_id,) = query(api_db, "SELECT id FROM outbox.messages WHERE wa_message_id = :w",
                          w=reply)[0]
    theirs = api.delete(f"/v1/messages/{inbound_id}", headers=h)
    assert theirs.status_code == 409 and theirs.json()["error"]["code"] == "not_cancellable"

    # Retry: only a failed message, only the caller's.
    not_failed = api.post(f"/v1/messages/{ids[3]}/retry", headers=h)
    assert not_failed.status_code == 409 and not_failed.json()["error"]["code"] == "not_failed"
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.outbox_messages SET status = 'failed', attempts = 5 "
                          "WHERE message_id = :m"), {"m": ids[3]})
        conn.execute(text("UPDATE outbox.messages SET status = 'failed' WHERE id = :m"),
                     {"m": ids[3]})
    assert api.post(f"/v1/messages/{ids[3]}/retry", headers=auth(other)).status_code == 404
    retried = api.post(f"/v1/messages/{ids[3]}/retry", headers=h)
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    assert query(api_db, "SELECT o.status, o.attempts, m.status FROM outbox.outbox_messages o "
                         "JOIN outbox.messages m ON m.id = o.message_id WHERE m.id = :m",
                 m=ids[3]) == [("queued", 0, "pending")]

    # The CLI and the library cancel the same way.
    (fresh,) = _queue(api_db, ch, 1, prefix="cli")
    assert cli("cancel", fresh).returncode == 0
    assert cli("cancel", fresh).returncode == 0
    gone = cli("cancel", str(uuid.uuid4()))
    assert gone.returncode == 2 and gone.stderr.startswith("error: message ")
    assert cli("cancel", ids[2]).returncode == 2
    with Session(api_db) as s, s.begin(), pytest.raises(AlreadySent):
        cancel(s, ids[2])


def test_cancel_a_dead_letter(api: httpx.Client, ws, api_db: Engine,
                              sim: SimulatorControl) -> None:
    """A dead letter (failed before WhatsApp took it) is cancelled like a
    queued message: it reads cancelled, leaves the dead letters, can't be
    retried, and says so with message.cancelled. One WhatsApp reported failed
    after taking it has nothing to cancel."""
    key, ch, other, _ = ws
    h = auth(key)
    ids = _queue(api_db, ch, 3, prefix="dead")
    sim.set_faults(error_status=400)
    assert asyncio.run(run_dispatcher(str(api_db.url.render_as_string(hide_password=False)))
                       ).failed == 3
    sim.clear_faults()
    dead = api.get("/v1/messages", params={"status": "failed"}, headers=h).json()["messages"]
    assert {m["message_id"] for m in dead} == set(ids)

    before = row_counts(api_db)
    theirs = api.delete(f"/v1/messages/{ids[0]}", headers=auth(other))
    assert theirs.status_code == 404
    assert row_counts(api_db) == before
    done = api.delete(f"/v1/messages/{ids[0]}", headers=h)
    assert done.status_code == 200 and done.json() == {"message_id": ids[0],
                                                        "status": "cancelled"}
    assert api.delete(f"/v1/messages/{ids[0]}", headers=h).status_code == 200  # again: same
    assert query(api_db, "SELECT o.status, m.status FROM outbox.outbox_messages o "
                         "JOIN outbox.messages m ON m.id = o.message_id WHERE m.id = :m",
                 m=ids[0]) == [("cancelled", "cancelled")]
    assert query(api_db, "SELECT type FROM outbox.events WHERE message_id = :m "
                         "AND type = 'message.cancelled'", m=ids[0]) == [("message.cancelled",)]
    dead = api.get("/v1/messages", params={"status": "failed"}, headers=h).json()["messages"]
    assert {m["message_id"] for m in dead} == set(ids[1:])
    again = api.post(f"/v1/messages/{ids[0]}/retry", headers=h)
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_failed"

    # Retried, then cancelled: queued, so cancelled all the same; never sent.
    assert api.post(f"/v1/messages/{ids[1]}/retry", headers=h).status_code == 200
    assert api.delete(f"/v1/messages/{ids[1]}", headers=h).status_code == 200
    assert asyncio.run(run_dispatcher(str(api_db.url.render_as_string(hide_password=False)))
                       ).sent == 0
    assert sent_by_body(sim) == {}

    # WhatsApp took it, then reported it failed: nothing to cancel.
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.outbox_messages SET status = 'sent' "
                          "WHERE message_id = :m"), {"m": ids[2]})
    late = api.delete(f"/v1/messages/{ids[2]}", headers=h)
    assert late.status_code == 409 and late.json()["error"]["code"] == "already_failed"
    # Nor to retry: it could arrive twice.
    twice = api.post(f"/v1/messages/{ids[2]}/retry", headers=h)
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "failed_after_sending"
    assert "new message" in twice.json()["error"]["message"]
    assert query(api_db, "SELECT status FROM outbox.messages WHERE id = :m", m=ids[2]) == [
        ("failed",)]


def test_batch(api: httpx.Client, ws, api_db: Engine) -> None:
    key, ch, other, other_ch = ws
    h = auth(key)
    batch = [{"channel_id": str(ch), "to": f"+1555050{i:04d}", "text": f"b{i}"}
             for i in range(3)]
    made = api.post("/v1/messages/batch", json={"messages": batch}, headers=h)
    assert made.status_code == 201, made.text
    queued = made.json()["messages"]
    assert [q["status"] for q in queued] == ["pending"] * 3
    bodies = query(api_db, "SELECT m.id, m.body FROM outbox.messages m")
    assert {str(r.id): r.body for r in bodies} == {q["message_id"]: f"b{i}"
                                                   for i, q in enumerate(queued)}

    before = row_counts(api_db)
    for messages, status, field in (
        ([*batch, {**batch[0], "to": "12"}], 422, "messages.3.to"),
        ([*batch, {**batch[0], "text": ""}], 422, "messages.3.text"),
        ([batch[0], {**batch[1], "text": None}], 422, "messages.1.text"),
        ([batch[0], {**batch[1], "priority": "high"}], 422, "messages.1.priority"),
        ([batch[0], {**batch[1], "channel_id": str(other_ch)}], 404, "messages.1.channel_id"),
        ([], 422, "messages"),
        ([batch[0]] * 1001, 422, "messages"),
    ):
        bad = api.post("/v1/messages/batch", json={"messages": messages}, headers=h)
        assert bad.status_code == status and bad.json()["error"]["field"] == field, bad.text
    assert row_counts(api_db) == before
    assert api.post("/v1/messages/batch", json={"messages": batch},
                    headers=auth(other)).status_code == 404


def test_a_thousand_in_one_batch(api: httpx.Client, ws, api_db: Engine) -> None:
    key, ch, _, _ = ws
    batch = [{"channel_id": str(ch), "to": f"+1555060{i % 100:04d}", "text": f"n{i}",
              "idempotency_key": f"k{i}"} for i in range(1000)]
    made = api.post("/v1/messages/batch", json={"messages": batch}, headers=auth(key))
    assert made.status_code == 201, made.text
    assert len(made.json()["messages"]) == 1000
    again = api.post("/v1/messages/batch", json={"messages": batch}, headers=auth(key)).json()
    assert all(m["duplicate"] for m in again["messages"])
    assert query(api_db, "SELECT count(*) FROM outbox.outbox_messages") == [(1000,)]


# --- sending into a chat, reading it: what WhatsApp hears ---------------------------------


@pytest.fixture
def wired(strict_sim: SimulatorHandle, strict_ctl: SimulatorControl, live_url: str,
          api_db: Engine, make_channel, api_key) -> tuple[SimulatorControl, str, uuid.UUID, str]:
    """A channel on the (strict) simulator, its webhooks posting to the app."""
    token = new_token()
    ch = make_channel(base_url=strict_sim.url, token=token, workspace_id="team-a")
    wire_webhooks(strict_ctl, live_url, api_db, ch, token)
    return strict_ctl, token, ch, api_key("team-a", scopes=AGENT)


def test_read_receipts_reach_whatsapp(api: httpx.Client, wired, api_db: Engine,
                                      database_url: str) -> None:
    ctl, token, ch, key = wired
    first = ctl.inbound(token, phone="+15550700001", text="hola", sender_name="Lu", wait=True)
    latest = ctl.inbound(token, phone="+15550700001", text="¿hay stock?", wait=True)
    assert first.delivered and latest.delivered
    chat = chat_of(api_db, "15550700001@s.whatsapp.net")
    read = api.post(f"/v1/chats/{chat}/read", headers=auth(key))
    assert read.status_code == 200 and read.json() == {"chat_id": chat, "messages_read": 2}
    assert api.post(f"/v1/chats/{chat}/read", headers=auth(key)).json()["messages_read"] == 0
    assert query(api_db, "SELECT message_type, payload, status FROM outbox.outbox_messages") == [
        ("read", {"message_id": latest.message_id}, "queued")]  # one receipt, the latest
    preview = query(api_db, "SELECT last_message_preview FROM outbox.chats")

    summary = asyncio.run(run_dispatcher(database_url))
    assert summary.sent == 1 and ctl.sent(token=token) == []  # a receipt is no message
    (receipt,) = ctl.reads(token=token)
    assert receipt["message_id"] == latest.message_id
    assert receipt["chat_id"] == "15550700001@s.whatsapp.net"
    assert query(api_db, "SELECT status FROM outbox.outbox_messages") == [("sent",)]
    assert query(api_db, "SELECT last_message_preview FROM outbox.chats") == preview
    detail = api.get("/v1/messages", params={"chat_id": chat}, headers=auth(key)).json()
    assert [(m["status"], m["outbox_status"]) for m in detail["messages"]] == [
        ("read", None), ("read", None)]

    # A receipt for a message WhatsApp doesn't know fails alone: the
    # channel keeps sending.
    inbound(api_db, ch, "15550700002", "not through whapi")
    other = chat_of(api_db, "15550700002@s.whatsapp.net")
    assert api.post(f"/v1/chats/{other}/read", headers=auth(key)).status_code == 200
    asyncio.run(run_dispatcher(database_url))
    assert query(api_db, "SELECT status FROM outbox.outbox_messages WHERE chat_id = :c",
                 c=other) == [("failed",)]
    assert query(api_db, "SELECT status FROM outbox.channels") == [("active",)]


def test_send_into_a_chat(api: httpx.Client, wired, api_db: Engine, database_url: str,
                          api_key) -> None:
    ctl, token, _ch, key = wired
    question = ctl.inbound(token, phone="+15550700003", text="price?", wait=True)
    chat = chat_of(api_db, "15550700003@s.whatsapp.net")
    other = api_key("team-b", scopes=AGENT)
    before = row_counts(api_db)
    for body, field in (({"text": ""}, "text"), ({}, "text"),
                        ({"text": "hi", "media": "https://x/y.png"}, "media"),
                        ({"text": "hi", "to": "+15550000009"}, "to")):
        bad = api.post(f"/v1/chats/{chat}/messages", json=body, headers=auth(key))
        assert bad.status_code == 422 and bad.json()["error"]["field"] == field, bad.text
    missing = api.post(f"/v1/chats/{chat}/messages", json={"text": "hi"}, headers=auth(other))
    assert missing.status_code == 404
    assert row_counts(api_db) == before
    assert query(api_db, "SELECT unread_count FROM outbox.chats") == [(1,)]

    sent = api.post(f"/v1/chats/{chat}/messages",
                    json={"text": "$10", "idempotency_key": "answer-1"}, headers=auth(key))
    assert sent.status_code == 201, sent.text
    assert sent.json()["chat_id"] == chat
    again = api.post(f"/v1/chats/{chat}/messages",
                     json={"text": "$10", "idempotency_key": "answer-1"}, headers=auth(key))
    assert again.status_code == 200 and again.json()["duplicate"]
    assert again.json()["message_id"] == sent.json()["message_id"]
    assert query(api_db, "SELECT unread_count FROM outbox.chats") == [(0,)]

    assert asyncio.run(run_dispatcher(database_url)).sent == 2
    (record,) = ctl.sent(token=token)
    assert (record.to, record.body) == ("15550700003@s.whatsapp.net", "$10")
    assert [r["message_id"] for r in ctl.reads(token=token)] == [question.message_id]


# --- cancel racing a dispatcher ------------------------------------------------------------


@pytest.mark.slow  # over a second
def test_cancel_racing_a_dispatcher(api_db: Engine, make_channel, sim, sim_url) -> None:
    """1,000 messages; half cancelled one by one while `dispatch --once`
    runs in another process. Each message ends cancelled and never reached
    the simulator, or sent once; never both."""
    ch = make_channel(base_url=sim_url)
    # A slow WhatsApp and a small dispatcher: it claims a few rows at a time,
    # so the cancels meet it mid-queue.
    sim.set_faults(latency_ms=10, latency_jitter_ms=2)
    with Session(api_db) as s, s.begin():
        results = enqueue_many(s, [TextMessage(ch, f"+1555080{i % 100:04d}", f"r{i:04d}")
                                   for i in range(1000)])
    ids = [str(r.message_id) for r in results]
    env = {**os.environ, "OUTBOX_BATCH_SIZE": "10", "OUTBOX_PER_CHANNEL_CLAIM": "10",
           "OUTBOX_CONCURRENCY": "8", "OUTBOX_CHANNEL_CONCURRENCY": "8"}
    proc = subprocess.Popen([sys.executable, "-m", "outbox", "dispatch", "--once",
                             "--no-progress"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: sim.stats().accepted > 0, timeout=60, interval=0.01)
        won = lost = 0
        # From the back: the cancels and the dispatcher meet mid-queue.
        for message_id in reversed(ids[1::2]):
            with Session(api_db) as s, s.begin():
                try:
                    cancel(s, message_id)
                    won += 1
                except (AlreadySending, AlreadySent):
                    lost += 1
        _out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    split = f"cancel race: {won} cancelled, {lost} too late"
    print(split)
    # Both sides every run, not by luck: the claim takes rows in queue order,
    # so the first batch (ids 0-9) is claimed before the first send lands and
    # the cancels start; walking from the back, they reach ids 1..9 last, too
    # late. And the back of the queue is still waiting when they start.
    assert won > 0 and lost > 0 and won + lost == 500, split
    assert cli("dispatch", "--once", "--no-progress").returncode == 0  # anything left over
    received = sent_by_body(sim)
    statuses = dict(query(api_db, "SELECT body, status FROM outbox.messages"))
    outbox = dict(query(api_db, "SELECT m.body, o.status FROM outbox.outbox_messages o "
                                "JOIN outbox.messages m ON m.id = o.message_id"))
    cancelled = {b for b, s in statuses.items() if s == "cancelled"}
    assert len(cancelled) == won
    for body, status in statuses.items():
        if status == "cancelled":
            assert body not in received and outbox[body] == "cancelled", body
        else:
            assert status == "sent" and len(received.get(body, [])) == 1, (body, status)
    assert set(received) == set(statuses) - cancelled
