"""The enqueue API against a real PostgreSQL: one transaction, idempotency, bad input."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from outbox import (
    ChannelDisabled,
    ChannelNotFound,
    InvalidInput,
    InvalidMessage,
    InvalidPhone,
    InvalidSchedule,
    MediaMessage,
    TextMessage,
    enqueue_many,
    enqueue_media,
    enqueue_text,
)
from tests.conftest import run_concurrently


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: conn.execute(text(f"SELECT count(*) FROM outbox.{t}")).scalar_one()
            for t in ("contacts", "chats", "messages", "outbox_messages")
        }


NOTHING = {"contacts": 0, "chats": 0, "messages": 0, "outbox_messages": 0}


def test_enqueue_commit_writes_linked_rows(session: Session, make_channel, clean_db: Engine):
    channel = make_channel()
    r = enqueue_text(session, channel_id=channel, to="+1 (555) 010-0001", body="Order shipped")
    session.commit()

    assert r.contact_created and r.chat_created and not r.duplicate
    assert isinstance(r.outbox_id, int)
    assert r.message_id.version == 7  # time-ordered: new rows land together (outbox/ids.py)
    with clean_db.connect() as conn:
        row = conn.execute(text("""
            SELECT o.status, o.attempts, o.recipient, o.message_type, o.payload, o.chat_id,
                   m.status AS m_status, m.direction, m.body, m.channel_id, m.workspace_id,
                   c.wa_chat_id, c.contact_id, ct.phone, o.next_attempt_at <= now() AS due
            FROM outbox.outbox_messages o
            JOIN outbox.messages m ON m.id = o.message_id
            JOIN outbox.chats c ON c.id = o.chat_id
            JOIN outbox.contacts ct ON ct.id = c.contact_id
            WHERE o.id = :id"""), {"id": r.outbox_id}).one()
    assert row.status == "queued" and row.attempts == 0 and row.due
    assert row.m_status == "pending" and row.direction == "outbound"
    assert row.body == "Order shipped" and row.payload == {"body": "Order shipped"}
    assert row.recipient == row.wa_chat_id == "15550100001@s.whatsapp.net"
    assert row.phone == "+15550100001"
    assert row.chat_id == r.chat_id and row.channel_id == channel
    assert row.workspace_id == "default"


def test_second_message_reuses_contact_and_chat(session: Session, make_channel, clean_db):
    channel = make_channel()
    a = enqueue_text(session, channel_id=channel, to="+15550100001", body="one")
    b = enqueue_text(session, channel_id=channel, to="15550100001@s.whatsapp.net", body="two")
    session.commit()
    assert a.chat_id == b.chat_id
    assert not b.contact_created and not b.chat_created
    assert b.outbox_id is not None and a.outbox_id is not None and b.outbox_id > a.outbox_id
    assert counts(clean_db) == {"contacts": 1, "chats": 1, "messages": 2, "outbox_messages": 2}


def test_known_contact_on_a_new_channel_gets_a_chat_not_a_second_contact(
        session: Session, make_channel, clean_db):
    """One batch mixing a known chat, a new chat for a known contact and a
    new contact: only the rows without a chat look contacts up."""
    first = make_channel()
    second = make_channel(name="second", phone="+15550000002")
    a = enqueue_text(session, channel_id=first, to="+15550100001", body="one")
    session.commit()
    known_chat, new_chat, new_contact = enqueue_many(session, [
        TextMessage(first, "+15550100001", "two"),
        TextMessage(second, "+15550100001", "three"),
        TextMessage(second, "+15550100002", "four"),
    ])
    session.commit()
    assert known_chat.chat_id == a.chat_id
    assert not known_chat.chat_created and not known_chat.contact_created
    assert new_chat.chat_created and not new_chat.contact_created
    assert new_contact.chat_created and new_contact.contact_created
    assert counts(clean_db) == {"contacts": 2, "chats": 3, "messages": 4, "outbox_messages": 4}
    with clean_db.connect() as conn:
        contact_of = dict(conn.execute(text(
            "SELECT c.id, ct.phone FROM outbox.chats c "
            "JOIN outbox.contacts ct ON ct.id = c.contact_id")).all())
    assert contact_of[a.chat_id] == contact_of[new_chat.chat_id] == "+15550100001"
    assert contact_of[new_contact.chat_id] == "+15550100002"


def test_rollback_leaves_no_trace(session: Session, make_channel, clean_db: Engine):
    channel = make_channel()
    enqueue_text(session, channel_id=channel, to="+15550100001", body="never")
    enqueue_media(session, channel_id=channel, to="+15550100002", media_type="image",
                  media="https://example.com/a.png", caption="c")
    session.rollback()
    assert counts(clean_db) == NOTHING


def test_business_row_and_message_commit_or_roll_back_together(make_channel, clean_db: Engine):
    channel = make_channel()
    with clean_db.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS app_orders (id int PRIMARY KEY, state text)"))
        conn.execute(text("TRUNCATE app_orders"))
    try:
        with Session(clean_db) as s:
            s.execute(text("INSERT INTO app_orders VALUES (1, 'shipped')"))
            enqueue_text(s, channel_id=channel, to="+15550100001", body="Order 1 shipped")
            s.rollback()
        with Session(clean_db) as s:
            s.execute(text("INSERT INTO app_orders VALUES (2, 'shipped')"))
            enqueue_text(s, channel_id=channel, to="+15550100001", body="Order 2 shipped")
            s.commit()
        with clean_db.connect() as conn:
            assert conn.execute(text("SELECT id FROM app_orders")).scalars().all() == [2]
            bodies = conn.execute(text("SELECT body FROM outbox.messages")).scalars().all()
        assert bodies == ["Order 2 shipped"]
    finally:
        with clean_db.begin() as conn:
            conn.execute(text("DROP TABLE app_orders"))


def test_notify_fires_only_on_commit(session: Session, make_channel, database_url: str):
    from outbox.db.conninfo import libpq_url

    channel = make_channel()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as listener:
        listener.execute("LISTEN outbox_enqueued")
        enqueue_text(session, channel_id=channel, to="+15550100001", body="x")
        session.rollback()
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
        enqueue_text(session, channel_id=channel, to="+15550100001", body="y")
        session.commit()
        got = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in got] == ["outbox_enqueued"]


def test_idempotency_key_returns_existing_message(session: Session, make_channel, clean_db):
    channel = make_channel()
    first = enqueue_text(session, channel_id=channel, to="+15550100001", body="a",
                         idempotency_key="order-1")
    session.commit()
    again = enqueue_text(session, channel_id=channel, to="+15550100001", body="a",
                         idempotency_key="order-1")
    session.commit()
    assert again.duplicate and not first.duplicate
    assert again.message_id == first.message_id and again.outbox_id == first.outbox_id
    # Same key, other channel: a different message.
    other = make_channel(name="other", phone="+15550000002")
    third = enqueue_text(session, channel_id=other, to="+15550100001", body="a",
                         idempotency_key="order-1")
    session.commit()
    assert third.message_id != first.message_id
    assert counts(clean_db)["messages"] == 2


def test_idempotency_under_concurrent_callers(make_channel, clean_db: Engine):
    """Two connections race with the same key: one message, both get its id."""
    channel = make_channel()
    barrier = threading.Barrier(2)
    results: list[uuid.UUID] = []

    def worker(hold: float) -> None:
        with Session(clean_db) as s:
            s.execute(text("SELECT 1"))
            barrier.wait()
            r = enqueue_text(s, channel_id=channel, to="+15550100009", body="race",
                             idempotency_key="race-key")
            # Hold the transaction open so the other insert has to wait on us.
            s.execute(text("SELECT pg_sleep(:t)"), {"t": hold})
            s.commit()
            results.append(r.message_id)

    run_concurrently(worker, (0.3, 0.0))
    assert len(results) == 2 and results[0] == results[1]
    assert counts(clean_db) == {"contacts": 1, "chats": 1, "messages": 1, "outbox_messages": 1}


def test_concurrent_first_messages_to_one_new_chat(make_channel, clean_db: Engine):
    """Many transactions create the same contact and chat at once: no errors, one chat."""
    channel = make_channel()
    n = 8
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        with Session(clean_db) as s:
            s.execute(text("SELECT 1"))
            barrier.wait()
            enqueue_text(s, channel_id=channel, to="+15550100042", body=f"m{i}")
            s.execute(text("SELECT pg_sleep(0.05)"))
            s.commit()

    run_concurrently(worker, range(n))
    assert counts(clean_db) == {"contacts": 1, "chats": 1, "messages": n, "outbox_messages": n}


def test_enqueue_many_in_order_with_duplicates_in_batch(session: Session, make_channel, clean_db):
    a = make_channel(name="a")
    b = make_channel(name="b", phone="+15550000002")
    msgs = [
        TextMessage(a, "+15550100001", "1"),
        TextMessage(b, "+15550100001", "2"),
        MediaMessage(a, "+15550100002", "document", "https://x.test/f.pdf",
                     caption="invoice", filename="f.pdf"),
        TextMessage(a, "+15550100001", "3", idempotency_key="k"),
        TextMessage(a, "+15550100001", "3 again", idempotency_key="k"),
    ]
    results = enqueue_many(session, msgs)
    session.commit()
    assert [r.duplicate for r in results] == [False, False, False, False, True]
    assert results[3].message_id == results[4].message_id
    with clean_db.connect() as conn:
        rows = conn.execute(text(
            "SELECT m.body, o.payload FROM outbox.outbox_messages o "
            "JOIN outbox.messages m ON m.id = o.message_id "
            "ORDER BY o.id")).all()
    assert [r.body for r in rows] == ["1", "2", "invoice", "3"]
    assert rows[2].payload == {"media": "https://x.test/f.pdf", "caption": "invoice",
                               "filename": "f.pdf"}


def test_scheduled_and_priority(session: Session, make_channel, clean_db: Engine):
    channel = make_channel()
    later = datetime.now(UTC) + timedelta(hours=1)
    r = enqueue_text(session, channel_id=channel, to="+15550100001", body="later",
                     send_at=later, priority=5)
    session.commit()
    with clean_db.connect() as conn:
        row = conn.execute(text("SELECT next_attempt_at, priority FROM outbox.outbox_messages "
                                "WHERE id = :id"), {"id": r.outbox_id}).one()
    assert abs((row.next_attempt_at - later).total_seconds()) < 0.001
    assert row.priority == 5


BAD_INPUTS = [
    (dict(to="", body="x"), InvalidPhone),
    (dict(to="   ", body="x"), InvalidPhone),
    (dict(to="not a phone", body="x"), InvalidPhone),
    (dict(to="+1555", body="x"), InvalidPhone),
    (dict(to="(555) 010-0001", body="x"), InvalidPhone),  # national format, no default region
    (dict(to="+1555\x000100001", body="x"), InvalidPhone),
    (dict(to="+" + "1" * 100_000, body="x"), InvalidPhone),
    (dict(to="+15550100001", body=""), InvalidMessage),
    (dict(to="+15550100001", body="   \n"), InvalidMessage),
    (dict(to="+15550100001", body="x" * 4097), InvalidMessage),
    (dict(to="+15550100001", body="nul\x00byte"), InvalidMessage),
    (dict(to="+15550100001", body="x", send_at=datetime(2030, 1, 1)), InvalidSchedule),
    (dict(to="+15550100001", body="x", priority=10**9), InvalidInput),
    (dict(to="+15550100001", body="x", idempotency_key=""), InvalidInput),
    (dict(to="+15550100001", body="x", idempotency_key="k" * 256), InvalidInput),
]


@pytest.mark.parametrize(("kwargs", "error"), BAD_INPUTS)
def test_bad_input_raises_typed_error_and_writes_nothing(
    kwargs, error, session: Session, make_channel, clean_db
):
    channel = make_channel()
    with pytest.raises(error) as info:
        enqueue_text(session, channel_id=channel, **kwargs)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200
    session.commit()
    assert counts(clean_db) == NOTHING


def test_the_schedule_limit_is_a_setting(session: Session, make_channel, clean_db,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from outbox.settings import get_settings

    channel = make_channel()
    monkeypatch.setenv("OUTBOX_MAX_SCHEDULE_AHEAD", "PT1H")
    get_settings.cache_clear()
    with pytest.raises(InvalidSchedule, match="3600 seconds ahead"):
        enqueue_text(session, channel_id=channel, to="+15550100001", body="x",
                     send_at=datetime.now(UTC) + timedelta(hours=2))
    session.rollback()
    assert counts(clean_db) == NOTHING
    enqueue_text(session, channel_id=channel, to="+15550100001", body="x",
                 send_at=datetime.now(UTC) + timedelta(minutes=50))
    session.commit()
    monkeypatch.delenv("OUTBOX_MAX_SCHEDULE_AHEAD")
    get_settings.cache_clear()


def test_exactly_4096_characters_is_accepted(session: Session, make_channel):
    channel = make_channel()
    enqueue_text(session, channel_id=channel, to="+15550100001", body="é" * 4096)
    session.commit()


def test_unknown_disabled_and_foreign_channel(session: Session, make_channel, clean_db):
    disabled = make_channel(status="disabled")
    foreign = make_channel(name="b", workspace_id="other-ws")
    with pytest.raises(ChannelNotFound):
        enqueue_text(session, channel_id=uuid.uuid4(), to="+15550100001", body="x")
    with pytest.raises(InvalidInput):
        enqueue_text(session, channel_id="not-a-uuid", to="+15550100001", body="x")
    with pytest.raises(ChannelDisabled):
        enqueue_text(session, channel_id=disabled, to="+15550100001", body="x")
    with pytest.raises(ChannelNotFound):
        enqueue_text(session, channel_id=foreign, to="+15550100001", body="x",
                     workspace_id="default")
    session.rollback()
    assert counts(clean_db) == NOTHING


def test_enqueue_many_is_all_or_nothing(session: Session, make_channel, clean_db: Engine):
    good = make_channel()
    disabled = make_channel(name="d", status="disabled")
    with pytest.raises(ChannelDisabled):
        enqueue_many(session, [TextMessage(good, "+15550100001", "ok"),
                               TextMessage(disabled, "+15550100001", "no")])
    with pytest.raises(InvalidPhone):
        enqueue_many(session, [TextMessage(good, "+15550100001", "ok"),
                               TextMessage(good, "nope", "no")])
    session.commit()
    assert counts(clean_db) == NOTHING


def test_media_validation(session: Session, make_channel):
    channel = make_channel()
    with pytest.raises(InvalidMessage):
        enqueue_media(session, channel_id=channel, to="+15550100001", media_type="sticker",
                      media="https://x.test/a")
    with pytest.raises(InvalidMessage):
        enqueue_media(session, channel_id=channel, to="+15550100001", media_type="image",
                      media="")
    with pytest.raises(InvalidMessage):
        enqueue_media(session, channel_id=channel, to="+15550100001", media_type="audio",
                      media="https://x.test/a.ogg", caption="no captions on audio")


async def test_async_session(make_channel, database_url: str, clean_db: Engine):
    channel = make_channel()
    engine = create_async_engine(database_url)
    try:
        async with AsyncSession(engine) as s:
            r = await enqueue_text(s, channel_id=channel, to="+15550100001", body="async")
            await s.rollback()
        assert counts(clean_db) == NOTHING
        async with AsyncSession(engine) as s:
            r = await enqueue_text(s, channel_id=channel, to="+15550100001", body="async")
            rs = await enqueue_many(s, [TextMessage(channel, "+15550100002", "b")])
            await s.commit()
        assert r.outbox_id is not None and len(rs) == 1
        assert counts(clean_db)["outbox_messages"] == 2
        # Bad input raises at the call, before anything is awaited.
        async with AsyncSession(engine) as s:
            with pytest.raises(InvalidMessage):
                enqueue_text(s, channel_id=channel, to="+15550100001", body="")
    finally:
        await engine.dispose()


async def test_cancel_through_an_async_session(make_channel, database_url: str,
                                              clean_db: Engine):
    """docs/enqueue.md: an AsyncSession cancels through run_sync, in its own
    transaction (a rollback keeps the message queued)."""
    from outbox import AlreadySent, cancel

    channel = make_channel()
    engine = create_async_engine(database_url)
    try:
        async with AsyncSession(engine) as s, s.begin():
            r = await enqueue_text(s, channel_id=channel, to="+15550100001", body="take back")
        async with AsyncSession(engine) as s:
            await s.run_sync(cancel, r.message_id)
            await s.rollback()
        assert _message_status(clean_db, r.message_id) == "pending"
        async with AsyncSession(engine) as s, s.begin():
            await s.run_sync(cancel, r.message_id)
        assert _message_status(clean_db, r.message_id) == "cancelled"
        with clean_db.begin() as conn:
            conn.execute(text("UPDATE outbox.messages SET status = 'sent' WHERE id = :id"),
                         {"id": r.message_id})
            conn.execute(text("UPDATE outbox.outbox_messages SET status = 'sent', "
                              "sent_at = now() WHERE message_id = :id"), {"id": r.message_id})
        async with AsyncSession(engine) as s, s.begin():
            with pytest.raises(AlreadySent):
                await s.run_sync(cancel, r.message_id)
    finally:
        await engine.dispose()


def _message_status(engine: Engine, message_id: uuid.UUID) -> str:
    with engine.connect() as conn:
        return str(conn.execute(text("SELECT status FROM outbox.messages WHERE id = :id"),
                                {"id": message_id}).scalar_one())


@pytest.mark.parametrize("callers_value", ["on", "off"])
def test_batch_enqueue_leaves_the_callers_planner_settings_alone(
        callers_value, session: Session, make_channel):
    """Batches turn nested loops off for their own statement only."""
    channel = make_channel()
    session.execute(text(f"SET LOCAL enable_nestloop = {callers_value}"))
    results = enqueue_many(session, [TextMessage(channel, f"+1555010{i:04d}", f"m{i}")
                                     for i in range(50)])
    assert len(results) == 50
    assert session.execute(text("SELECT current_setting('enable_nestloop')")).scalar_one() == (
        callers_value)
    session.rollback()


def test_large_batches_stay_fast_after_many_runs(session: Session, make_channel, clean_db):
    """More than 5 batches on one connection (psycopg prepares at 5): every
    batch still lands, in order (a generic plan once made these quadratic)."""
    channel = make_channel()
    for run in range(8):
        results = enqueue_many(session, [
            TextMessage(channel, f"+1555020{i % 300:04d}", f"r{run}-{i}") for i in range(300)])
        assert len({r.message_id for r in results}) == 300
    session.commit()
    assert counts(clean_db)["outbox_messages"] == 2400
