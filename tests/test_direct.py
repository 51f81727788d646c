"""db/direct.py: the dispatcher's own psycopg connection, against a real server."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from sqlalchemy import Engine, text

from outbox.db.conninfo import libpq_url
from outbox.db.direct import DatabaseUnavailable, DirectConnection, StatementRefused
from outbox.db.driver_sql import driver_sql

APP = "outbox-test-direct"


@pytest.fixture
async def direct(database_url: str):  # type: ignore[no-untyped-def]
    conn = DirectConnection(libpq_url(database_url), application_name=APP)
    yield conn
    await conn.aclose()


def _backends(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE application_name = :app "
            "AND datname = current_database()"), {"app": APP},
        ).scalars())


async def test_runs_statements_in_autocommit_with_named_parameters(
        direct: DirectConnection, clean_db: Engine) -> None:
    assert await direct.fetchall(driver_sql("SELECT :a + 1, CAST(:b AS text) || '%'"),
                                 {"a": 41, "b": "x"}) == [(42, "x%")]
    await direct.execute(driver_sql(
        "INSERT INTO outbox.contacts (id, workspace_id, phone) "
        "VALUES (gen_random_uuid(), 'default', :phone)"), {"phone": "+15550001111"})
    # Autocommit: another connection sees the row at once.
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outbox.contacts")).scalar_one() == 1
    assert len(_backends(clean_db)) == 1  # named, and one connection reused


async def test_a_lost_connection_is_unavailable_then_replaced(
        direct: DirectConnection, clean_db: Engine) -> None:
    assert await direct.fetchone("SELECT 1", {}) == (1,)
    (pid,) = _backends(clean_db)
    with clean_db.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        conn.commit()
    with pytest.raises(DatabaseUnavailable) as info:
        await direct.fetchone("SELECT 1", {})
    assert isinstance(info.value.__cause__, Exception)
    # The next call reconnects by itself.
    assert await direct.fetchone("SELECT 2", {}) == (2,)
    assert _backends(clean_db) != [pid]


async def test_an_unreachable_server_is_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = DirectConnection(f"postgresql://postgres@127.0.0.1:{port}/x", application_name=APP)
    with pytest.raises(DatabaseUnavailable, match="OperationalError"):
        await conn.fetchone("SELECT 1", {})
    await conn.aclose()


async def test_a_refused_statement_names_no_values_and_leaves_the_connection_usable(
        direct: DirectConnection, clean_db: Engine) -> None:
    secret = "not-a-uuid-but-a-message-body"
    with pytest.raises(StatementRefused) as info:
        await direct.fetchone(driver_sql("SELECT CAST(:v AS uuid)"), {"v": secret})
    assert "SQLSTATE 22P02" in str(info.value) and secret not in str(info.value)
    assert await direct.fetchone("SELECT 3", {}) == (3,)


async def test_a_transaction_commits_together_or_not_at_all(
        direct: DirectConnection, clean_db: Engine) -> None:
    insert = driver_sql("INSERT INTO outbox.contacts (id, workspace_id, phone) "
                        "VALUES (gen_random_uuid(), 'default', :phone)")
    with pytest.raises(StatementRefused):
        async with direct.transaction():
            await direct.execute(insert, {"phone": "+15550002222"})
            await direct.execute(insert, {"phone": None})  # NOT NULL: refused
    async with direct.transaction():
        await direct.execute(insert, {"phone": "+15550003333"})
        await direct.execute(insert, {"phone": "+15550004444"})
    with clean_db.connect() as conn:
        phones = conn.execute(
            text("SELECT phone FROM outbox.contacts ORDER BY phone")).scalars().all()
    assert phones == ["+15550003333", "+15550004444"]


def _running(engine: Engine, fragment: str) -> bool:
    """Whether another session is executing a statement containing `fragment`."""
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
            "AND datname = current_database() AND strpos(query, :q) > 0 "
            "AND pid <> pg_backend_pid()"), {"q": fragment}).scalar_one())


async def test_a_statement_cancelled_mid_transaction_does_not_leak_into_the_next(
        direct: DirectConnection, clean_db: Engine) -> None:
    insert = driver_sql("INSERT INTO outbox.contacts (id, workspace_id, phone) "
                        "VALUES (gen_random_uuid(), 'default', :phone)")

    async def slow() -> None:
        async with direct.transaction():
            await direct.execute(insert, {"phone": "+15550005555"})
            await direct.execute("SELECT pg_sleep(30)", {})

    task = asyncio.create_task(slow())
    deadline = time.monotonic() + 30
    while not _running(clean_db, "pg_sleep(30)"):  # the insert is done, mid-transaction
        assert time.monotonic() < deadline, "the statement never started"
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises((asyncio.CancelledError, DatabaseUnavailable)):
        await task
    # A fresh statement runs in autocommit and the cancelled insert is gone.
    assert await direct.fetchone("SELECT 4", {}) == (4,)
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outbox.contacts")).scalar_one() == 0


async def test_use_after_aclose_is_a_programming_error(database_url: str) -> None:
    conn = DirectConnection(libpq_url(database_url), application_name=APP)
    assert await conn.fetchone("SELECT 1", {}) == (1,)
    await conn.aclose()
    await conn.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="after aclose"):
        await conn.fetchone("SELECT 1", {})


async def test_tasks_sharing_a_connection_take_turns_and_never_join_a_transaction(
        direct: DirectConnection, clean_db: Engine) -> None:
    """A statement from another task waits for the transaction in progress
    instead of running inside it (and being rolled back with it)."""
    insert = driver_sql("INSERT INTO outbox.contacts (id, workspace_id, phone) "
                        "VALUES (gen_random_uuid(), 'default', :phone)")
    inside = asyncio.Event()
    order: list[str] = []

    async def doomed() -> None:
        async with direct.transaction():
            await direct.execute(insert, {"phone": "+15550006666"})
            inside.set()
            await asyncio.sleep(0.3)  # the other task tries meanwhile
            await direct.execute(insert, {"phone": None})  # refused: all rolled back
        order.append("never")

    async def other() -> None:
        await inside.wait()
        await direct.execute(insert, {"phone": "+15550007777"})
        order.append("other")

    results = await asyncio.gather(doomed(), other(), return_exceptions=True)
    assert isinstance(results[0], StatementRefused) and results[1] is None
    assert order == ["other"]
    with clean_db.connect() as conn:
        phones = conn.execute(text("SELECT phone FROM outbox.contacts")).scalars().all()
    assert phones == ["+15550007777"]


async def test_the_engine_path_translates_the_same_way(database_url: str,
                                                       clean_db: Engine) -> None:
    """What the credential cache reads through SQLAlchemy fails as the
    dispatcher's own statements do: the same two exceptions, no values."""
    from outbox.database import make_async_engine
    from outbox.db.direct import translated_errors

    secret = "not-a-uuid-but-a-message-body"
    engine = make_async_engine(database_url, pool_size=1)
    try:
        with pytest.raises(StatementRefused) as refused:
            async with translated_errors(), engine.connect() as conn:
                await conn.execute(text("SELECT CAST(:v AS uuid)"), {"v": secret})
        assert "SQLSTATE 22P02" in str(refused.value) and secret not in str(refused.value)
    finally:
        await engine.dispose()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    nowhere = make_async_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x",
                                pool_size=1)
    try:
        with pytest.raises(DatabaseUnavailable, match="OperationalError"):
            async with translated_errors(), nowhere.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await nowhere.dispose()
