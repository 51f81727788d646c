"""Callers of the enqueue API on every driver, behind one small interface.

A `Caller` opens transactions the way an application on that driver would:
a SQLAlchemy `Session` (psycopg 3, psycopg2), an `AsyncSession` (psycopg 3
async, asyncpg), a plain DB-API connection (psycopg 3, psycopg2) or Django's
own connection inside `transaction.atomic()`. Each transaction (`Tx`) offers
the three enqueue functions and plain SQL, and commits at the end of its
`with` block unless asked to roll back, so one test body runs on them all.

A transaction may be used from any thread (the race tests start one per
caller): async ones run on an event loop of their own, on a connection of
their own (NullPool), like two web requests.

The `caller` fixture is registered for every test module by `pytest_plugins`
in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from outbox import EnqueueResult, enqueue_many, enqueue_media, enqueue_text
from outbox.db.conninfo import libpq_url
from outbox.message_types import NewMessage

T = TypeVar("T")

# Every caller, by the id the tests show.
SESSION_DRIVERS = {"psycopg": "postgresql+psycopg", "psycopg2": "postgresql+psycopg2"}
ASYNC_DRIVERS = {"psycopg_async": "postgresql+psycopg", "asyncpg": "postgresql+asyncpg"}
DBAPI_DRIVERS = ("dbapi_psycopg", "dbapi_psycopg2")
CALLERS = (*SESSION_DRIVERS, *ASYNC_DRIVERS, *DBAPI_DRIVERS, "django")


class Tx(ABC):
    """One open transaction of a caller."""

    def __init__(self) -> None:
        self.rollback_requested = False

    def rollback(self) -> None:
        """Roll back instead of committing at the end of the `with` block."""
        self.rollback_requested = True

    @property
    @abstractmethod
    def target(self) -> Any:
        """What the application hands to `enqueue_*`."""

    def enqueue_text(self, **kwargs: Any) -> EnqueueResult:
        return self._wait(enqueue_text(self.target, **kwargs))

    def enqueue_media(self, **kwargs: Any) -> EnqueueResult:
        return self._wait(enqueue_media(self.target, **kwargs))

    def enqueue_many(self, messages: Sequence[NewMessage], **kwargs: Any) -> list[EnqueueResult]:
        return self._wait(enqueue_many(self.target, messages, **kwargs))

    @abstractmethod
    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        """Run SQL without parameters in this transaction; its rows, if any."""

    def _wait(self, value: Any) -> Any:
        return value


class Caller(ABC):
    name: str

    @abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[Tx]: ...

    def close(self) -> None:
        return None


# --- SQLAlchemy --------------------------------------------------------------


class _SessionTx(Tx):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    @property
    def target(self) -> Any:
        return self.session

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        result = self.session.execute(text(sql))
        return [tuple(r) for r in result] if result.returns_rows else []


class SessionCaller(Caller):
    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.engine: Engine = create_engine(url, pool_size=2, max_overflow=8)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with Session(self.engine) as session:
            tx = _SessionTx(session)
            try:
                yield tx
            except BaseException:
                session.rollback()
                raise
            if tx.rollback_requested:
                session.rollback()
            else:
                session.commit()

    def close(self) -> None:
        self.engine.dispose()


class _AsyncSessionTx(Tx):
    def __init__(self, session: AsyncSession, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.session = session
        self.loop = loop

    @property
    def target(self) -> Any:
        return self.session

    def _wait(self, value: Any) -> Any:
        return self.loop.run_until_complete(value)

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        result = self._wait(self.session.execute(text(sql)))
        return [tuple(r) for r in result] if result.returns_rows else []


class AsyncSessionCaller(Caller):
    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        loop = asyncio.new_event_loop()
        # A connection per transaction: pooled async connections belong to
        # the loop that opened them.
        engine: AsyncEngine = create_async_engine(self.url, poolclass=NullPool)
        try:
            session = AsyncSession(engine)
            tx = _AsyncSessionTx(session, loop)
            try:
                yield tx
            except BaseException:
                loop.run_until_complete(session.rollback())
                raise
            else:
                if tx.rollback_requested:
                    loop.run_until_complete(session.rollback())
                else:
                    loop.run_until_complete(session.commit())
            finally:
                loop.run_until_complete(session.close())
        finally:
            loop.run_until_complete(engine.dispose())
            loop.close()


# --- DB-API ------------------------------------------------------------------


class _DBAPITx(Tx):
    def __init__(self, conn: Any) -> None:
        super().__init__()
        self.conn = conn

    @property
    def target(self) -> Any:
        return self.conn

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        cur = self.conn.cursor()
        try:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
        finally:
            cur.close()


class DBAPICaller(Caller):
    """A connection per transaction, opened in a transaction (not autocommit)."""

    def __init__(self, name: str, database_url: str) -> None:
        self.name = name
        self.conninfo = libpq_url(database_url)

    def connect(self) -> Any:
        if self.name == "dbapi_psycopg":
            return psycopg.connect(self.conninfo)
        import psycopg2

        return psycopg2.connect(self.conninfo)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        conn = self.connect()
        try:
            tx = _DBAPITx(conn)
            yield tx
            if tx.rollback_requested:
                conn.rollback()
            else:
                conn.commit()
        finally:
            conn.close()  # unfinished work is rolled back


# --- Django ------------------------------------------------------------------


def django_database(database_url: str) -> dict[str, Any]:
    """Django's DATABASES["default"] for the test database."""
    url = make_url(database_url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": url.database,
        "USER": url.username or "",
        "PASSWORD": url.password or "",
        # The embedded server is reached by its socket directory (?host=).
        "HOST": url.query.get("host") or url.host or "",
        "PORT": str(url.query.get("port") or url.port or ""),
    }


def configure_django(database_url: str) -> None:
    """Django settings for a script or test: the test database, nothing else."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DATABASES={"default": django_database(database_url)}, USE_TZ=True)
        django.setup()


class _DjangoTx(Tx):
    @property
    def target(self) -> Any:
        from django.db import connection

        # Inside atomic() the wrapper is connected: this is its DB-API connection.
        return connection.connection

    def execute(self, sql: str) -> list[tuple[Any, ...]]:
        from django.db import connection

        with connection.cursor() as cur:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []


class DjangoCaller(Caller):
    name = "django"

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        from django.db import connection, transaction

        try:
            with transaction.atomic():
                tx = _DjangoTx()
                yield tx
                if tx.rollback_requested:
                    transaction.set_rollback(True)
        finally:
            connection.close()  # this thread's connection: no leftovers between tests


def make_caller(name: str, database_url: str) -> Caller:
    url = make_url(database_url)
    if name in SESSION_DRIVERS:
        return SessionCaller(name, url.set(drivername=SESSION_DRIVERS[name])
                             .render_as_string(hide_password=False))
    if name in ASYNC_DRIVERS:
        return AsyncSessionCaller(name, url.set(drivername=ASYNC_DRIVERS[name])
                                  .render_as_string(hide_password=False))
    if name in DBAPI_DRIVERS:
        return DBAPICaller(name, database_url)
    configure_django(database_url)
    return DjangoCaller()


@pytest.fixture(params=CALLERS)
def caller(request: pytest.FixtureRequest, database_url: str) -> Iterator[Caller]:
    c = make_caller(request.param, database_url)
    yield c
    c.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from a sync test (the dispatcher is async)."""
    return asyncio.run(coro)
