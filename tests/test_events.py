"""Events are written by the statement that makes the change: every type by
the action that should produce it, none by a rolled-back transaction, ids a
reader can follow with `id > last` even when transactions commit out of
order, and pruning that keeps the held ids one unbroken range."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.db import event_queries
from outbox.db.states import EventType
from outbox.enqueue import enqueue_text
from outbox.webhooks.apply import WebhookChannel, process_webhook
from tests.dispatch_helpers import run_dispatcher
from tests.whapi_spec import load_payload

OUT_API = "syKUikDXTT9jqR28-JdqXq7Lm2R"  # the target of the corpus' reaction
IN_TEXT = "IYwsisfSyFb5JnDiNWhr-AqDXq7Lm2R"
ALICE = "+44 7700 900123"


def events(engine: Engine, *, after: int = 0) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT id, workspace_id, type, channel_id, chat_id, message_id, payload "
            "FROM outbox.events WHERE id > :after ORDER BY id"), {"after": after}))


def last_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT COALESCE(max(id), 0) FROM outbox.events"))
                   .scalar_one())


def webhook(engine: Engine, channel_id: uuid.UUID, payload: Any) -> None:
    with Session(engine) as s, s.begin():
        ws = s.execute(text("SELECT workspace_id FROM outbox.channels WHERE id = :c"),
                       {"c": channel_id}).scalar_one()
        process_webhook(s, WebhookChannel(channel_id, ws, ""), payload)


def types_since(engine: Engine, mark: int) -> list[str]:
    return [e.type for e in events(engine, after=mark)]


def test_enqueue_and_dispatch_outcomes(make_channel, clean_db: Engine, database_url: str,
                                       sim, sim_url) -> None:
    import asyncio

    channel = make_channel(base_url=sim_url, workspace_id="acme")
    with Session(clean_db) as s, s.begin():
        ok = enqueue_text(s, channel_id=channel, to="+15550100001", body="shipped",
                          idempotency_key="order-1").message_id
    (queued,) = events(clean_db)
    assert (queued.type, queued.workspace_id, queued.message_id, queued.channel_id) == (
        "message.queued", "acme", ok, channel)
    assert queued.payload == {"type": "text", "idempotency_key": "order-1"}
    assert queued.chat_id is not None

    # A replay of the same key queues nothing, and says nothing.
    mark = last_id(clean_db)
    with Session(clean_db) as s, s.begin():
        enqueue_text(s, channel_id=channel, to="+15550100001", body="shipped",
                     idempotency_key="order-1")
    assert types_since(clean_db, mark) == []

    asyncio.run(run_dispatcher(database_url))
    (sent,) = events(clean_db, after=mark)
    assert (sent.type, sent.message_id) == ("message.sent", ok)
    with clean_db.connect() as conn:
        wa_id = conn.execute(text("SELECT wa_message_id FROM outbox.messages WHERE id = :i"),
                             {"i": ok}).scalar_one()
    assert sent.payload == {"wa_message_id": wa_id}

    # A permanent failure dead-letters: message.failed with the reason; a
    # retry of the dead letter queues it again.
    with Session(clean_db) as s, s.begin():
        bad = enqueue_text(s, channel_id=channel, to="+15550100002", body="x").message_id
    mark = last_id(clean_db)
    sim.set_faults(error_status=400)
    asyncio.run(run_dispatcher(database_url))
    sim.clear_faults()
    (failed,) = events(clean_db, after=mark)
    assert (failed.type, failed.message_id) == ("message.failed", bad)
    assert "400" in failed.payload["error"]
    from outbox.admin.status import retry_failed

    with Session(clean_db) as s, s.begin():
        assert retry_failed(s, channel_id=channel) == 1
    (again,) = events(clean_db, after=failed.id)
    assert (again.type, again.message_id, again.payload["retry"]) == (
        "message.queued", bad, True)


def test_statuses_inbound_and_actions(make_channel, clean_db: Engine) -> None:
    channel = make_channel()
    with Session(clean_db) as s, s.begin():
        mid = enqueue_text(s, channel_id=channel, to=ALICE, body="Your order").message_id
        s.execute(text("UPDATE outbox.messages SET status = 'sent', wa_message_id = :w "
                       "WHERE id = :id"), {"w": OUT_API, "id": mid})
    mark = last_id(clean_db)
    for status in ("delivered", "read", "played"):
        webhook(clean_db, channel, {"statuses": [
            {"id": OUT_API, "status": status, "timestamp": "1712995378"}]})
    # A repeat and a late `delivered` move nothing: no event either.
    webhook(clean_db, channel, {"statuses": [
        {"id": OUT_API, "status": "delivered", "timestamp": "1712995378"}]})
    got = events(clean_db, after=mark)
    assert [(e.type, e.message_id) for e in got] == [
        ("message.delivered", mid), ("message.read", mid), ("message.played", mid)]

    mark = last_id(clean_db)
    webhook(clean_db, channel, load_payload("messages_post_text"))
    webhook(clean_db, channel, load_payload("messages_post_text"))  # a replay: nothing new
    (received,) = events(clean_db, after=mark)
    assert received.type == "message.received"
    assert received.payload["wa_message_id"] == IN_TEXT and received.payload["type"] == "text"
    assert received.payload["body"]

    mark = last_id(clean_db)
    webhook(clean_db, channel, load_payload("messages_post_action_reaction"))
    webhook(clean_db, channel, load_payload("messages_post_action_reaction"))  # unchanged
    (reaction,) = events(clean_db, after=mark)
    assert (reaction.type, reaction.message_id) == ("message.reaction", mid)
    assert reaction.payload["emoji"] == "👍"

    mark = last_id(clean_db)
    webhook(clean_db, channel, load_payload("messages_post_action_edit"))
    webhook(clean_db, channel, load_payload("messages_post_image"))
    webhook(clean_db, channel, load_payload("messages_post_action_delete"))
    assert types_since(clean_db, mark) == ["message.edited", "message.received",
                                           "message.deleted"]

    mark = last_id(clean_db)
    archive = load_payload("chats_patch_archive")
    webhook(clean_db, channel, archive)
    webhook(clean_db, channel, archive)  # a replay
    unarchive = json.loads(json.dumps(archive))
    unarchive["chats_updates"][0]["after_update"]["archive"] = False
    webhook(clean_db, channel, unarchive)
    assert types_since(clean_db, mark) == ["chat.archived", "chat.reopened"]

    # Someone writes into the archived chat: it reopens, and says so.
    webhook(clean_db, channel, archive)
    mark = last_id(clean_db)
    again = load_payload("messages_post_text")
    again["messages"][0]["id"] = "a-new-message-into-the-archive"
    webhook(clean_db, channel, again)
    webhook(clean_db, channel, again)  # a replay: nothing new
    assert sorted(types_since(clean_db, mark)) == ["chat.reopened", "message.received"]

    mark = last_id(clean_db)
    webhook(clean_db, channel, load_payload("channel_post_qr"))
    webhook(clean_db, channel, load_payload("channel_post_auth"))
    got = events(clean_db, after=mark)
    assert [(e.type, e.channel_id) for e in got] == [
        ("channel.paused", channel), ("channel.resumed", channel)]
    assert got[0].payload["cause"] == "session"


def test_people_actions(make_channel, clean_db: Engine) -> None:
    from outbox.admin import chats, messages
    from outbox.admin.channels import pause_channel, resume_channel
    from outbox.admin.users import create_user

    channel = make_channel()
    webhook(clean_db, channel, load_payload("messages_post_text"))
    with clean_db.connect() as conn:
        chat_id = conn.execute(text("SELECT chat_id FROM outbox.messages")).scalar_one()
    with Session(clean_db) as s, s.begin():  # an assignee is a user of the chat's workspace
        user = create_user(s, workspace_id="default", role="agent",
                           email=f"agent-{uuid.uuid4().hex[:8]}@example.com",
                           password="correct horse battery staple").id
    mark = last_id(clean_db)
    with Session(clean_db) as s, s.begin():
        chats.assign_chat(s, chat_id, user)
        chats.assign_chat(s, chat_id, user)  # no change, no event
        chats.archive_chat(s, chat_id)
        chats.archive_chat(s, chat_id)
        chats.unarchive_chat(s, chat_id)
        chats.mark_chat_read(s, chat_id)
        queued = enqueue_text(s, channel_id=channel, to="+15550100003", body="x").message_id
        messages.cancel(s, queued)
        messages.cancel(s, queued)  # already cancelled: a no-op
        pause_channel(s, channel, reason="holiday")
        resume_channel(s, channel)
        resume_channel(s, channel)  # already active
    got = events(clean_db, after=mark)
    assert [e.type for e in got] == [
        "chat.assigned", "chat.archived", "chat.reopened", "chat.read", "message.queued",
        "message.cancelled", "channel.paused", "channel.resumed"]
    assert got[0].payload == {"assigned_to": str(user)}
    assert got[3].payload == {"messages_read": 1}
    assert got[5].message_id == queued
    assert got[6].payload["reason"] == "holiday" and got[6].payload["cause"] == "manual"
    # One transaction: ids in the order the statements ran.
    assert [e.id for e in got] == sorted(e.id for e in got)
    assert len({e.id >> 20 for e in got}) == 1


def test_a_rolled_back_transaction_leaves_no_event(make_channel, clean_db: Engine) -> None:
    from outbox.admin.channels import pause_channel

    channel = make_channel()
    with Session(clean_db) as s:
        enqueue_text(s, channel_id=channel, to="+15550100001", body="x")
        pause_channel(s, channel)
        webhook_channel = WebhookChannel(channel, "default", "")
        process_webhook(s, webhook_channel, load_payload("messages_post_text"))
        assert s.execute(text("SELECT count(*) FROM outbox.events")).scalar_one() == 3
        s.rollback()
    assert events(clean_db) == []


def test_every_type_is_in_the_vocabulary_and_the_check() -> None:
    import importlib

    migration = importlib.import_module("migrations.versions.0010_events")
    assert tuple(EventType) == migration.EVENT_TYPES
    assert all("." in t for t in EventType)


def _read(engine: Engine, after: int) -> list[int]:
    with engine.connect() as conn:
        rows = conn.execute(text(event_queries.EVENTS_AFTER), {
            "workspace_id": "default", "after": after, "types": None, "chat_id": None,
            "limit": 100}).all()
    return [r.id for r in rows if r.id is not None]


def _read_settled(engine: Engine, after: int, count: int) -> list[int]:
    """`_read` once `count` events are past the horizon: on a shared server,
    another database's write transaction can hold it back for a moment."""
    deadline = time.monotonic() + 20
    while len(page := _read(engine, after)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return page


def test_a_reader_never_skips_an_event_committed_late(make_channel, clean_db: Engine) -> None:
    """Transaction A writes first, B second; B commits first. A reader that
    saw B's event and reads `id > it` must still get A's when A commits:
    nothing is handed out while a transaction that started before it runs."""
    channel = make_channel()
    first, second = Session(clean_db), Session(clean_db)
    try:
        a = enqueue_text(first, channel_id=channel, to="+15550100001", body="a").message_id
        b = enqueue_text(second, channel_id=channel, to="+15550100002", body="b").message_id
        second.commit()
        # B is committed, but A (older) is running: B's event waits.
        assert _read(clean_db, 0) == []
        first.commit()
    finally:
        first.close()
        second.close()
    got = events(clean_db)
    assert [e.message_id for e in got] == [a, b]  # id order is transaction order
    assert _read_settled(clean_db, 0, 2) == [e.id for e in got]
    # A reader that had B's id could only have got it after A's.
    assert _read(clean_db, got[0].id) == [got[1].id]


def test_concurrent_writers_and_a_following_reader_agree(make_channel,
                                                        clean_db: Engine) -> None:
    """Writers commit in any order while a reader follows with `id > last`:
    it ends with every event exactly once, in id order."""
    channel = make_channel()
    stop = threading.Event()
    seen: list[int] = []

    def follow() -> None:
        last = 0
        deadline = None
        while True:
            done = stop.is_set()
            page = _read(clean_db, last)
            seen.extend(page)
            if page:
                last = page[-1]
            elif done:
                deadline = deadline or time.monotonic() + 20
                if len(seen) >= 60 or time.monotonic() > deadline:
                    return

    reader = threading.Thread(target=follow)
    reader.start()

    def write(n: int) -> None:
        for i in range(15):
            with Session(clean_db) as s, s.begin():
                enqueue_text(s, channel_id=channel, to=f"+1555010{n:02d}{i:02d}", body="x")
                if i % 3 == n % 3:
                    s.execute(text("SELECT pg_sleep(0.01)"))

    writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join(timeout=30)
    assert seen == [e.id for e in events(clean_db)]
    assert len(seen) == 60


async def test_pruning_keeps_an_unbroken_range(make_channel, clean_db: Engine,
                                               database_url: str) -> None:
    from outbox.database import make_async_engine
    from outbox.maintenance.event_pruner import EventPruner

    channel = make_channel()
    for n in range(5):
        with Session(clean_db) as s, s.begin():
            enqueue_text(s, channel_id=channel, to=f"+155501000{n:02d}", body="x")
    ids = [e.id for e in events(clean_db)]
    with clean_db.begin() as conn:  # back-dated: the first two and the fourth are old
        conn.execute(text("UPDATE outbox.events SET occurred_at = now() - interval '8 days' "
                          "WHERE id = ANY(:ids)"), {"ids": [ids[0], ids[1], ids[3]]})
    engine = make_async_engine(database_url, pool_size=1)
    try:
        pruner = EventPruner(older_than_seconds=7 * 86400, batch=2)
        assert await pruner.run_once(engine) == 2
        # The fourth is old but the third is not: it stays, so the oldest
        # id held still says what was pruned.
        assert [e.id for e in events(clean_db)] == ids[2:]
        assert await pruner.run_once(engine) == 0
    finally:
        await engine.dispose()


@pytest.mark.parametrize("size", [1, 300])
def test_one_statement_many_events_unique_ids(make_channel, clean_db: Engine,
                                              size: int) -> None:
    from outbox.enqueue import enqueue_many
    from outbox.message_types import TextMessage

    channel = make_channel()
    with Session(clean_db) as s, s.begin():
        enqueue_many(s, [TextMessage(channel, f"+1555020{n:04d}", "x") for n in range(size)])
        enqueue_many(s, [TextMessage(channel, f"+1555030{n:04d}", "x") for n in range(size)])
    got = events(clean_db)
    assert len(got) == len({e.id for e in got}) == 2 * size
    assert len({e.id >> 20 for e in got}) == 1
    assert sorted(e.id & (2**20 - 1) for e in got) == list(range(1, 2 * size + 1))


async def test_the_dispatchers_pauses_the_timer_and_the_rescuer(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url: str) -> None:
    """channel.paused from a 429 and a 401 (the completion's transaction),
    channel.resumed from the unpauser's timer, message.failed from the
    rescuer on a last attempt whose worker vanished."""
    from outbox.database import make_async_engine
    from outbox.maintenance.rescuer import Rescuer
    from outbox.maintenance.unpauser import Unpauser

    limited = make_channel(name="limited", base_url=sim_url)
    _send_to(clean_db, limited)
    sim.set_faults(error_status=429, retry_after=30)
    await run_dispatcher(database_url)
    sim.clear_faults()
    paused = [e for e in events(clean_db) if e.type == "channel.paused"]
    assert len(paused) == 1 and paused[0].channel_id == limited
    assert paused[0].payload["cause"] == "rate_limit" and paused[0].payload["paused_until"]

    engine = make_async_engine(database_url, pool_size=1)
    try:
        mark = last_id(clean_db)
        with clean_db.begin() as conn:  # the pause runs out
            conn.execute(text("UPDATE outbox.channels SET paused_until = now() - "
                              "interval '1 second' WHERE id = :c"), {"c": limited})
        assert await Unpauser().run_once(engine) == [limited]
        (resumed,) = events(clean_db, after=mark)
        assert (resumed.type, resumed.payload) == ("channel.resumed", {"by": "timer"})

        mark = last_id(clean_db)
        with clean_db.begin() as conn:  # its worker vanished mid-send, on the last attempt
            conn.execute(text(
                "UPDATE outbox.outbox_messages SET status = 'sending', attempts = max_attempts, "
                "claim_token = gen_random_uuid(), send_started_at = now(), "
                "locked_until = now() - interval '1 second'"))
        await Rescuer().run_once(engine)
        (failed,) = events(clean_db, after=mark)
        assert failed.type == "message.failed" and "last attempt" in failed.payload["error"]
    finally:
        await engine.dispose()

    refused = make_channel(name="refused", phone="+15550000007", base_url=sim_url)
    _send_to(clean_db, refused)
    mark = last_id(clean_db)
    sim.set_faults(error_status=401)
    await run_dispatcher(database_url)
    sim.clear_faults()
    got = [e for e in events(clean_db, after=mark) if e.type == "channel.paused"]
    assert [(e.channel_id, e.payload["cause"]) for e in got] == [(refused, "unauthorized")]


def _send_to(engine: Engine, channel: uuid.UUID) -> uuid.UUID:
    with Session(engine) as s, s.begin():
        return enqueue_text(s, channel_id=channel, to="+15550100001", body="x").message_id
