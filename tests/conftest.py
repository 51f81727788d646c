"""Test fixtures: a real PostgreSQL database of our own for each run.

`OUTBOX_TEST_DATABASE_URL` points at a server (CI runs one on 127.0.0.1);
without it, the embedded server in ./.outbox is used. Either way the run
creates its own database, migrates it, and drops it at the end.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import Session

REPO = Path(__file__).resolve().parent.parent
# 32 bytes in base64, as OUTBOX_ENCRYPTION_KEY must be (fixed: tests only).
TEST_KEY = base64.urlsafe_b64encode(hashlib.sha256(b"whapi-outbox tests").digest()).decode()
TABLES = ("outbox_messages", "messages", "chats", "contacts", "channel_tokens", "channels",
          "events", "webhook_deliveries", "webhook_endpoints")

# Fixtures of the HTTP service, the enqueue callers and the simulator, for
# every test module (no per-module imports of fixture names).
pytest_plugins = ["tests.api_fixtures", "tests.driver_fixtures", "tests.sim_fixtures",
                  "tests.console_fixtures"]


def _server_url() -> str:
    url = os.environ.get("OUTBOX_TEST_DATABASE_URL")
    if url:
        from outbox.database import normalize_url

        return normalize_url(url)
    from outbox.db.embedded import embedded_server_url

    return embedded_server_url(REPO / ".outbox", database="postgres")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    from outbox.db.admin import create_database, drop_database
    from outbox.migrate import upgrade

    server_url = _server_url()
    name = f"outbox_test_{os.getpid()}_{secrets.token_hex(3)}"
    url = create_database(server_url, name)
    upgrade(url)
    try:
        yield url
    finally:
        drop_database(server_url, name)


@pytest.fixture
def fresh_database_url() -> Iterator[str]:
    """An empty database of its own (no migrations), dropped after the test."""
    from outbox.db.admin import create_database, drop_database

    server_url = _server_url()
    name = f"outbox_fresh_{os.getpid()}_{secrets.token_hex(3)}"
    url = create_database(server_url, name)
    try:
        yield url
    finally:
        drop_database(server_url, name)


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    from outbox.database import make_engine

    eng = make_engine(database_url, pool_size=5)
    yield eng
    eng.dispose()


@pytest.fixture
async def async_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An asyncio engine on the test database (the dispatcher's kind), for one test."""
    from outbox.database import make_async_engine

    eng = make_async_engine(database_url, pool_size=2)
    yield eng
    await eng.dispose()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Settings for code under test (CLI subprocesses inherit them)."""
    monkeypatch.setenv("OUTBOX_ENCRYPTION_KEY", TEST_KEY)
    monkeypatch.delenv("OUTBOX_DATABASE_URL", raising=False)
    if "database_url" in request.fixturenames:
        monkeypatch.setenv("OUTBOX_DATABASE_URL", request.getfixturevalue("database_url"))
    from outbox.settings import get_settings

    get_settings.cache_clear()


@pytest.fixture
def clean_db(engine: Engine) -> Iterator[Engine]:
    """A database with empty tables (the schema stays)."""
    truncate(engine, TABLES)
    yield engine


def truncate(engine: Engine, tables: Sequence[str]) -> None:
    """Empty `tables` as `TRUNCATE ... RESTART IDENTITY CASCADE` would, but
    truncate only the ones holding rows or a used sequence: a TRUNCATE costs
    new files for a table and each of its indexes whether it held rows or
    not, and most tests leave most tables empty.

    The shared test server's background pass (webhook backlog, every few
    seconds) reads some of them: when it and the locks here meet in opposite
    orders the server ends one as a deadlock, or the lock waits past its
    timeout; if it is ours, it runs again."""
    from sqlalchemy.exc import OperationalError

    closure = _cascade(engine, tuple(tables))
    for attempt in range(5):
        try:
            with engine.begin() as conn:
                # Locked first, as TRUNCATE would: nothing lands between the
                # look and the TRUNCATE.
                conn.execute(text(f"LOCK TABLE {', '.join(closure)} IN ACCESS EXCLUSIVE MODE"))
                used = conn.execute(text(_used_tables_sql(closure))).scalars().all()
                if used:
                    conn.execute(text(f"TRUNCATE {', '.join(used)} RESTART IDENTITY CASCADE"))
            return
        except OperationalError as exc:
            # Either way the background pass held a lock a moment: go again.
            transient = "deadlock detected" in str(exc) or "lock timeout" in str(exc)
            if not transient or attempt == 4:
                raise


_CASCADES: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}


def _cascade(engine: Engine, tables: tuple[str, ...]) -> tuple[str, ...]:
    """`tables` and every table that refers to them, at any depth (what
    TRUNCATE ... CASCADE empties), as schema-qualified names."""
    key = (str(engine.url), tables)
    if key not in _CASCADES:
        with engine.connect() as conn:
            _CASCADES[key] = tuple(conn.execute(text("""
                WITH RECURSIVE cascade(oid) AS (
                    SELECT CAST(CAST(name AS regclass) AS oid)
                    FROM unnest(CAST(:names AS text[])) AS name
                    UNION
                    SELECT c.conrelid FROM pg_constraint c
                    JOIN cascade ON c.confrelid = cascade.oid
                    WHERE c.contype = 'f'
                )
                SELECT format('%I.%I', n.nspname, r.relname)
                FROM cascade JOIN pg_class r ON r.oid = cascade.oid
                JOIN pg_namespace n ON n.oid = r.relnamespace
                ORDER BY 1
            """), {"names": [f"outbox.{t}" for t in tables]}).scalars())
    return _CASCADES[key]


def _used_tables_sql(tables: Sequence[str]) -> str:
    """The tables among `tables` that hold a row or own a sequence that has
    handed out a value (RESTART IDENTITY resets it)."""
    holding = " UNION ALL ".join(
        f"SELECT '{t}' WHERE EXISTS (SELECT FROM {t})" for t in tables)
    return f"""
        {holding}
        UNION
        SELECT format('%I.%I', tn.nspname, t.relname)
        FROM pg_depend d
        JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        JOIN pg_sequences ps ON ps.schemaname = (SELECT nspname FROM pg_namespace
                                                 WHERE oid = s.relnamespace)
                            AND ps.sequencename = s.relname
        JOIN pg_class t ON t.oid = d.refobjid
        JOIN pg_namespace tn ON tn.oid = t.relnamespace
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.deptype IN ('a', 'i') AND ps.last_value IS NOT NULL
          AND format('%I.%I', tn.nspname, t.relname) IN ({", ".join(f"'{t}'" for t in tables)})
    """


@pytest.fixture
def session(clean_db: Engine) -> Iterator[Session]:
    with Session(clean_db, expire_on_commit=False) as s:
        yield s


@pytest.fixture
def make_channel(clean_db: Engine):  # type: ignore[no-untyped-def]
    """Create a committed channel; returns its id."""
    from outbox.admin.channels import create_channel

    def _make(
        *,
        name: str = "test",
        phone: str = "+15550000001",
        token: str | None = None,
        workspace_id: str = "default",
        base_url: str | None = None,
        status: str = "active",
    ) -> uuid.UUID:
        with Session(clean_db) as s, s.begin():
            info = create_channel(
                s, name=name, phone_number=phone, token=token or secrets.token_hex(16),
                encryption_key=TEST_KEY, workspace_id=workspace_id, base_url=base_url,
            )
            if status != "active":
                s.execute(text("UPDATE outbox.channels SET status = :s WHERE id = :id"),
                          {"s": status, "id": info.id})
        return info.id

    return _make


def run_concurrently(worker: Callable[[Any], None], args: Sequence[Any]) -> None:
    """worker(arg) for each arg, each in a thread of its own, all at once;
    fails with every exception a worker raised."""
    errors: list[BaseException] = []

    def guarded(arg: Any) -> None:
        try:
            worker(arg)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
