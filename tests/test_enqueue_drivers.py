"""The enqueue API on every driver an application may hand it.

The same behaviours as tests/test_enqueue.py (rows written, batches in
order, idempotency also under races, rollback, typed errors, NOTIFY on
commit), run by callers on psycopg 3, psycopg2 and asyncpg sessions (sync
and async), plain DB-API connections and Django's `transaction.atomic()`
(tests/driver_fixtures.py); then the dispatcher sends what each wrote.
"""


from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, text

from outbox import (
    ChannelDisabled,
    ChannelNotFound,
    InvalidMessage,
    InvalidPhone,
    InvalidSchedule,
    MediaMessage,
    TextMessage,
    enqueue_many,
    enqueue_text,
)
from outbox.db.conninfo import libpq_url
from outbox.errors import ConfigurationError
from tests.conftest import run_concurrently
from tests.dispatch_helpers import REPO, channel_tokens, outbox_counts, run_dispatcher
from tests.driver_fixtures import Caller, configure_django, django_database, run

TABLES = ("contacts", "chats", "messages", "outbox_messages")
NOTHING = dict.fromkeys(TABLES, 0)


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM outbox.{t}")).scalar_one()
                for t in TABLES}


def test_text_and_media_commit_linked_rows(caller: Caller, make_channel, clean_db: Engine):
    channel = make_channel()
    later = datetime.now(UTC) + timedelta(hours=1)
    with caller.transaction() as tx:
        r = tx.enqueue_text(channel_id=channel, to="+1 (555) 010-0001", body="Order shipped",
                            priority=5)
        m = tx.enqueue_media(channel_id=channel, to="+15550100001", media_type="document",
                             media="https://x.test/f.pdf", caption="invoice", filename="f.pdf",
                             send_at=later)
    # The same types whatever the driver (asyncpg has a uuid subclass of its own).
    assert type(r.message_id) is uuid.UUID and type(r.chat_id) is uuid.UUID
    assert type(r.outbox_id) is int and r.message_id.version == 7
    assert r.contact_created and r.chat_created and not r.duplicate
    assert m.chat_id == r.chat_id and not m.chat_created and not m.contact_created
    with clean_db.connect() as conn:
        rows = conn.execute(text("""
            SELECT o.id, o.message_id, o.status, o.recipient, o.message_type, o.payload,
                   o.priority, o.next_attempt_at, m.status AS m_status, m.body, ct.phone
            FROM outbox.outbox_messages o
            JOIN outbox.messages m ON m.id = o.message_id
            JOIN outbox.chats c ON c.id = o.chat_id
            JOIN outbox.contacts ct ON ct.id = c.contact_id
            ORDER BY o.id""")).all()
    assert [(x.id, x.message_id) for x in rows] == [(r.outbox_id, r.message_id),
                                                    (m.outbox_id, m.message_id)]
    text_row, media_row = rows
    assert text_row.status == media_row.status == "queued"
    assert text_row.m_status == "pending" and text_row.body == "Order shipped"
    assert text_row.payload == {"body": "Order shipped"} and text_row.priority == 5
    assert text_row.recipient == "15550100001@s.whatsapp.net" and text_row.phone == "+15550100001"
    assert media_row.message_type == "document"
    assert media_row.payload == {"media": "https://x.test/f.pdf", "caption": "invoice",
                                 "filename": "f.pdf"}
    assert abs((media_row.next_attempt_at - later).total_seconds()) < 0.001


@pytest.mark.slow
@pytest.mark.parametrize("callers_nestloop", ["on", "off"])
def test_batches_in_order_and_callers_settings_kept(
        callers_nestloop, caller: Caller, make_channel, clean_db: Engine):
    """Small and large batches (large ones change planner settings for their
    statement only), more than five times on one connection (asyncpg and
    psycopg prepare repeated statements), duplicates inside a batch."""
    a = make_channel(name="a")
    b = make_channel(name="b", phone="+15550000002")
    with caller.transaction() as tx:
        tx.execute(f"SET LOCAL enable_nestloop = {callers_nestloop}")
        small = tx.enqueue_many([
            TextMessage(a, "+15550100001", "1"),
            TextMessage(b, "+15550100001", "2"),
            MediaMessage(a, "+15550100002", "image", "https://x.test/a.png", caption="c"),
            TextMessage(a, "+15550100001", "3", idempotency_key="k"),
            TextMessage(a, "+15550100001", "3 again", idempotency_key="k"),
        ])
        big = [tx.enqueue_many([TextMessage((a, b)[i % 2], f"+1555020{i % 40:04d}", f"r{run}-{i}")
                                for i in range(60)])
               for run in range(7)]
        settings = tx.execute("SELECT current_setting('enable_nestloop'), current_setting('jit')")
    assert settings[0][0] == callers_nestloop and settings[0][1] == "on"
    assert [r.duplicate for r in small] == [False, False, False, False, True]
    assert small[3].message_id == small[4].message_id
    assert [r.chat_created for r in big[0][:4]] == [True] * 4
    assert not any(r.chat_created or r.duplicate for r in big[1])
    ids = [r.outbox_id for results in big for r in results]
    assert ids == sorted(ids) and len(set(ids)) == 7 * 60
    with clean_db.connect() as conn:
        bodies = conn.execute(text(
            "SELECT m.body FROM outbox.outbox_messages o "
            "JOIN outbox.messages m ON m.id = o.message_id "
            "ORDER BY o.id")).scalars().all()
    assert bodies == (["1", "2", "c", "3"]
                      + [f"r{run}-{i}" for run in range(7) for i in range(60)])
    assert counts(clean_db) == {"contacts": 2 + 40, "chats": 3 + 40, "messages": 424,
                                "outbox_messages": 424}


def test_idempotency_key_returns_the_existing_message(caller: Caller, make_channel,
                                                      clean_db: Engine):
    channel = make_channel()
    with caller.transaction() as tx:
        first = tx.enqueue_text(channel_id=channel, to="+15550100001", body="a",
                                idempotency_key="order-1")
    with caller.transaction() as tx:
        again = tx.enqueue_text(channel_id=channel, to="+15550100001", body="a",
                                idempotency_key="order-1")
        many = tx.enqueue_many([TextMessage(channel, "+15550100001", "a",
                                            idempotency_key="order-1")] * 12)
    assert again.duplicate and not first.duplicate
    assert (again.message_id, again.outbox_id) == (first.message_id, first.outbox_id)
    assert all(r.duplicate and r.message_id == first.message_id for r in many)
    assert counts(clean_db)["messages"] == 1


@pytest.mark.slow
def test_idempotency_under_concurrent_callers(caller: Caller, make_channel, clean_db: Engine):
    """Two transactions race with one key: the second waits on the first's
    uncommitted row, sees the winner, and both return its id."""
    channel = make_channel()
    barrier = threading.Barrier(2)
    results: list[uuid.UUID] = []

    def worker(hold: float) -> None:
        with caller.transaction() as tx:
            tx.execute("SELECT 1")
            barrier.wait()
            r = tx.enqueue_text(channel_id=channel, to="+15550100009", body="race",
                                idempotency_key="race-key")
            # Hold the transaction open so the other insert has to wait on us.
            tx.execute(f"SELECT pg_sleep({hold})")
        results.append(r.message_id)

    run_concurrently(worker, (0.3, 0.0))
    assert len(results) == 2 and results[0] == results[1]
    assert counts(clean_db) == {"contacts": 1, "chats": 1, "messages": 1, "outbox_messages": 1}


@pytest.mark.slow
def test_concurrent_first_messages_to_one_new_chat(caller: Caller, make_channel,
                                                   clean_db: Engine):
    channel = make_channel()
    n = 5
    barrier = threading.Barrier(n)

    def worker(i: int) -> None:
        with caller.transaction() as tx:
            tx.execute("SELECT 1")
            barrier.wait()
            tx.enqueue_text(channel_id=channel, to="+15550100042", body=f"m{i}")
            tx.execute("SELECT pg_sleep(0.05)")

    run_concurrently(worker, range(n))
    assert counts(clean_db) == {"contacts": 1, "chats": 1, "messages": n, "outbox_messages": n}


def test_rollback_leaves_nothing_commit_keeps_both(caller: Caller, make_channel,
                                                  clean_db: Engine):
    channel = make_channel()
    with clean_db.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS app_orders (id int PRIMARY KEY)"))
        conn.execute(text("TRUNCATE app_orders"))
    try:
        with caller.transaction() as tx:
            tx.execute("INSERT INTO app_orders VALUES (1)")
            tx.enqueue_text(channel_id=channel, to="+15550100001", body="Order 1 shipped")
            tx.enqueue_many([TextMessage(channel, f"+1555010{i:04d}", f"b{i}")
                             for i in range(20)])
            tx.rollback()
        assert counts(clean_db) == NOTHING
        with pytest.raises(RuntimeError), caller.transaction() as tx:
            tx.enqueue_text(channel_id=channel, to="+15550100001", body="Order 1 shipped")
            raise RuntimeError("the application fails after the enqueue")
        assert counts(clean_db) == NOTHING
        with caller.transaction() as tx:
            tx.execute("INSERT INTO app_orders VALUES (2)")
            tx.enqueue_text(channel_id=channel, to="+15550100001", body="Order 2 shipped")
        with clean_db.connect() as conn:
            assert conn.execute(text("SELECT id FROM app_orders")).scalars().all() == [2]
            assert conn.execute(text("SELECT body FROM outbox.messages")).scalars().all() == [
                "Order 2 shipped"]
    finally:
        with clean_db.begin() as conn:
            conn.execute(text("DROP TABLE app_orders"))


BAD_INPUTS: list[tuple[dict[str, Any], type[Exception]]] = [
    (dict(to="not a phone", body="x"), InvalidPhone),
    (dict(to="+15550100001", body=""), InvalidMessage),
    (dict(to="+15550100001", body="nul\x00byte"), InvalidMessage),
    (dict(to="+15550100001", body="x", send_at=datetime(2030, 1, 1)), InvalidSchedule),
]


def test_bad_input_and_bad_channels_raise_typed_errors_and_write_nothing(
        caller: Caller, make_channel, clean_db: Engine):
    good = make_channel()
    disabled = make_channel(name="d", phone="+15550000002", status="disabled")
    foreign = make_channel(name="f", phone="+15550000003", workspace_id="other-ws")
    with caller.transaction() as tx:
        for kwargs, error in BAD_INPUTS:
            with pytest.raises(error):
                tx.enqueue_text(channel_id=good, **kwargs)
        with pytest.raises(ChannelNotFound):
            tx.enqueue_text(channel_id=uuid.uuid4(), to="+15550100001", body="x")
        with pytest.raises(ChannelNotFound):
            tx.enqueue_text(channel_id=foreign, to="+15550100001", body="x",
                            workspace_id="default")
        with pytest.raises(ChannelDisabled):
            tx.enqueue_media(channel_id=disabled, to="+15550100001", media_type="image",
                             media="https://x.test/a.png")
        # All or nothing, small and large batches alike.
        for size in (2, 30):
            with pytest.raises(ChannelDisabled):
                tx.enqueue_many([TextMessage(good, f"+1555010{i:04d}", "ok")
                                 for i in range(size - 1)]
                                + [TextMessage(disabled, "+15550100001", "no")])
        # The transaction is still usable: the application decides what to do.
        assert tx.execute("SELECT 1") == [(1,)]
    assert counts(clean_db) == NOTHING


@pytest.mark.slow
def test_notify_only_after_commit(caller: Caller, make_channel, database_url: str):
    channel = make_channel()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as listener:
        listener.execute("LISTEN outbox_enqueued")
        with caller.transaction() as tx:
            tx.enqueue_text(channel_id=channel, to="+15550100001", body="x")
            tx.rollback()
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
        with caller.transaction() as tx:
            tx.enqueue_many([TextMessage(channel, f"+1555010{i:04d}", "y") for i in range(20)])
            assert list(listener.notifies(timeout=0.3, stop_after=1)) == []  # not yet
        got = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in got] == ["outbox_enqueued"]


@pytest.mark.slow
def test_dispatcher_sends_what_each_driver_enqueued(caller: Caller, make_channel,
                                                    clean_db: Engine, database_url: str,
                                                    sim, sim_url):
    channels = [make_channel(name=f"c{i}", phone=f"+155500000{i + 1:02d}", base_url=sim_url)
                for i in range(2)]
    with caller.transaction() as tx:
        tx.enqueue_text(channel_id=channels[0], to="+15550100001", body="single")
        tx.enqueue_media(channel_id=channels[1], to="+15550100002", media_type="image",
                         media="https://x.test/a.png", caption="pic")
        tx.enqueue_many([TextMessage(channels[i % 2], f"+1555030{i % 7:04d}", f"m{i:03d}",
                                     idempotency_key=f"k{i}") for i in range(40)])
    summary = run(run_dispatcher(database_url))
    assert summary.sent == 42 and summary.failed == 0
    assert outbox_counts(clean_db) == {"sent": 42}
    records = sim.sent()
    tokens = channel_tokens(clean_db)
    by_body = {rec.body if rec.type == "text" else rec.payload.get("caption"): rec
               for rec in records}
    assert len(records) == len(by_body) == 42
    assert by_body["single"].to == "15550100001@s.whatsapp.net"
    assert by_body["single"].token == tokens[channels[0]]
    assert by_body["pic"].type == "image" and by_body["pic"].token == tokens[channels[1]]
    for i in range(40):
        rec = by_body[f"m{i:03d}"]
        assert rec.to == f"1555030{i % 7:04d}@s.whatsapp.net"
        assert rec.token == tokens[channels[i % 2]]


# --- DB-API connections: what is refused, what is left alone --------------------


def test_autocommit_connection_is_refused_and_nothing_written(make_channel, clean_db: Engine,
                                                              database_url: str):
    """Without a transaction there is nothing to join: the message would go
    out whatever became of the caller's other writes."""
    import psycopg2

    channel = make_channel()
    with (psycopg.connect(libpq_url(database_url), autocommit=True) as conn,
          pytest.raises(ConfigurationError, match="autocommit")):
        enqueue_text(conn, channel_id=channel, to="+15550100001", body="x")
    conn2 = psycopg2.connect(libpq_url(database_url))
    try:
        conn2.autocommit = True
        with pytest.raises(ConfigurationError, match=r"transaction\.atomic"):
            enqueue_text(conn2, channel_id=channel, to="+15550100001", body="x")
    finally:
        conn2.close()
    assert counts(clean_db) == NOTHING


def test_other_objects_are_refused_with_a_hint(make_channel, database_url: str):
    configure_django(database_url)
    from django.db import connection

    channel = make_channel()
    with pytest.raises(TypeError, match=r"django\.db\.connection\.connection"):
        enqueue_text(connection, channel_id=channel, to="+15550100001", body="x")
    with pytest.raises(TypeError, match="not str"):
        enqueue_text("postgresql://", channel_id=channel, to="+15550100001",  # type: ignore[call-overload]
                     body="x")


def test_dbapi_connection_left_as_the_caller_had_it(make_channel, clean_db: Engine,
                                                    database_url: str):
    """Row and cursor factories of the caller's own, prepare_threshold and
    planner settings unchanged, the transaction still open, nothing committed."""
    import psycopg2
    import psycopg2.extras
    from psycopg.rows import dict_row

    channel = make_channel()
    with psycopg.connect(libpq_url(database_url), row_factory=dict_row,
                         cursor_factory=psycopg.ClientCursor, prepare_threshold=2) as conn:
        singles = [enqueue_text(conn, channel_id=channel, to="+15550100001", body=f"a{i}")
                   for i in range(3)]
        batch = enqueue_many(conn, [TextMessage(channel, "+15550100001", f"b{i}")
                                    for i in range(20)])
        assert conn.prepare_threshold == 2 and not conn.closed
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert conn.execute("SELECT current_setting('enable_nestloop') AS v").fetchone() == {
            "v": "on"}
        conn.rollback()
    assert len({r.chat_id for r in singles + batch}) == 1
    assert counts(clean_db) == NOTHING

    conn2 = psycopg2.connect(libpq_url(database_url),
                             cursor_factory=psycopg2.extras.RealDictCursor)
    try:
        r = enqueue_text(conn2, channel_id=channel, to="+15550100001", body="a")
        assert type(r.message_id) is uuid.UUID and not conn2.closed
        assert conn2.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INTRANS
        conn2.rollback()
    finally:
        conn2.close()
    assert counts(clean_db) == NOTHING


# --- Django on psycopg2 ---------------------------------------------------------

_DJANGO_ON_PSYCOPG2 = """
import json, sys
# Django takes psycopg 3 when it can import it: hide it while Django loads.
sys.modules["psycopg"] = None
from django.conf import settings
settings.configure(DATABASES={"default": json.loads(sys.argv[1])}, USE_TZ=True)
import django
django.setup()
import django.db.backends.postgresql.base
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.db import connection, transaction
del sys.modules["psycopg"]  # outbox itself needs psycopg 3 (its dispatcher's driver)
assert not is_psycopg3
from outbox import enqueue_text
channel = sys.argv[2]

with transaction.atomic():
    with connection.cursor() as cur:
        cur.execute("INSERT INTO app_orders VALUES (1)")
    enqueue_text(connection.connection, channel_id=channel, to="+15550100001", body="kept")
try:
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("INSERT INTO app_orders VALUES (2)")
        enqueue_text(connection.connection, channel_id=channel, to="+15550100001", body="gone")
        raise RuntimeError("rolled back")
except RuntimeError:
    pass
print(type(connection.connection).__module__)
"""


@pytest.mark.slow
def test_django_on_psycopg2_commits_and_rolls_back_with_atomic(
        make_channel, clean_db: Engine, database_url: str):
    """Django on psycopg2 (its only driver before Django 4.2), in a process
    of its own: Django picks its driver once, at import."""
    channel = make_channel()
    with clean_db.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS app_orders (id int PRIMARY KEY)"))
        conn.execute(text("TRUNCATE app_orders"))
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_DJANGO_ON_PSYCOPG2),
             json.dumps(django_database(database_url)), str(channel)],
            capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().startswith("psycopg2")
        with clean_db.connect() as conn:
            assert conn.execute(text("SELECT id FROM app_orders")).scalars().all() == [1]
            assert conn.execute(
                text("SELECT body FROM outbox.messages")).scalars().all() == ["kept"]
    finally:
        with clean_db.begin() as conn:
            conn.execute(text("DROP TABLE app_orders"))
