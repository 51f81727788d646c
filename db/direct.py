"""A psycopg connection of the dispatcher's own, for its hot statements.

CLAIM and COMPLETE run about a hundred times a second under load. Through
SQLAlchemy's async layer every statement pays a pool checkout, a pre-ping
round trip, a greenlet hop and result wrapping: for a 50-row claim and its
completion, about twice the client CPU per message of psycopg's own
connection, an eighth of the dispatcher's whole CPU per message. So the
dispatcher holds one autocommit connection per role (claiming, completing:
db/dispatch_store.py) and runs its statements on it directly; the SQL
still comes from db/queries.py, converted once by `driver_sql`.

psycopg prepares a statement after its fifth run, which is most of this
module's speed-up; behind a transaction-mode pooler it must not (db/engine.py
says why), so a connection made `to` an engine follows that engine's pooler.

Two exceptions (both `DatabaseError`) say what a caller can do about a
failure, whichever way the statement went (this connection, or an engine's
connection inside `translated_errors`):

* `DatabaseUnavailable`: the connection could not be made or was lost, the
  server is shutting down or cancelled the statement (psycopg's
  OperationalError and InterfaceError). Wait and try again: the next call
  opens a new connection if this one is gone.
* `StatementRefused`: the server refused this statement (a constraint,
  invalid data). The same statement will be refused again.

Neither message carries parameter values (they can hold message bodies).

A connection serves one task at a time (a lock): the dispatcher's
completions and its lease heartbeat share one, and a transaction's
statements never interleave with another task's.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from outbox.db.conninfo import DatabaseTarget, as_target, psycopg_connect_args
from outbox.db.pooler import Pooler
from outbox.db.schema import DEFAULT_SCHEMA, in_schema

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

CONNECT_TIMEOUT_SECONDS = 10

Row = tuple[Any, ...]
# Empty, not None: psycopg then still reads `%%` in a driver_sql statement as `%`.
NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


class DatabaseError(Exception):
    """A statement did not go through (one of the two below)."""


class DatabaseUnavailable(DatabaseError):
    """The database can't be reached now; retrying later may work."""


class StatementRefused(DatabaseError):
    """The database refused the statement itself; retrying won't help."""


@asynccontextmanager
async def translated_errors() -> AsyncIterator[None]:
    """psycopg's errors, bare or wrapped by SQLAlchemy, as `DatabaseUnavailable`
    or `StatementRefused`: the one translation for the dispatcher's reads and
    writes, whichever connection they use."""
    try:
        yield
    except psycopg.Error as exc:
        raise _translate(exc) from exc
    except Exception as exc:
        # SQLAlchemy's wrapper, looked up only if SQLAlchemy is loaded (a
        # process that never imported it can't have raised one).
        sa_exc = sys.modules.get("sqlalchemy.exc")
        if sa_exc is not None and isinstance(exc, sa_exc.DBAPIError):
            raise _translate(exc.orig, invalidated=exc.connection_invalidated) from exc
        raise


def _translate(exc: BaseException | None, *, invalidated: bool = False) -> DatabaseError:
    if invalidated or isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailable(_first_line(exc))
    # Only the class and SQLSTATE: a refusal's text can quote a value
    # ('invalid input syntax for type uuid: "..."').
    sqlstate = getattr(exc, "sqlstate", None)
    return StatementRefused(f"{type(exc).__name__} (SQLSTATE {sqlstate})")


class DirectConnection:
    """One autocommit psycopg connection, opened on first use and reopened
    after it breaks. Concurrent tasks take turns (a transaction is one turn);
    roles that must not wait for each other (claims, completions) get a
    connection each."""

    def __init__(self, conninfo: str, *, application_name: str,
                 pooler: Pooler = "none", schema: str = DEFAULT_SCHEMA) -> None:
        self._conninfo = conninfo
        self._schema = schema
        self._application_name = application_name
        self._connect_args = psycopg_connect_args(pooler)
        self._conn: psycopg.AsyncConnection[Row] | None = None
        self._in_transaction = False
        self._closed = False
        self._turn = asyncio.Lock()
        self._turn_holder: asyncio.Task[Any] | None = None

    @classmethod
    def to(cls, database: DatabaseTarget | AsyncEngine, *,
           application_name: str) -> DirectConnection:
        """A connection to `database` (a target, or the database an engine
        points at: same URL, credentials, pooler and schema)."""
        t = as_target(database)
        return cls(t.conninfo, application_name=application_name, pooler=t.pooler,
                   schema=t.schema)

    @property
    def schema(self) -> str:
        """The schema our tables are in, on this connection's database."""
        return self._schema

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._conn is not None else "idle"
        return f"DirectConnection({self._application_name!r}, {state})"

    async def execute(self, sql: str, params: Mapping[str, Any] = NO_PARAMS) -> int:
        """Run `sql`; the number of rows it changed (psycopg's rowcount)."""
        async with self._my_turn(), translated_errors():
            cur = await (await self._connection()).execute(in_schema(sql, self._schema), params)
            return cur.rowcount

    async def fetchall(self, sql: str, params: Mapping[str, Any]) -> list[Row]:
        async with self._my_turn(), translated_errors():
            cur = await (await self._connection()).execute(in_schema(sql, self._schema), params)
            return await cur.fetchall()

    async def fetchone(self, sql: str, params: Mapping[str, Any]) -> Row | None:
        async with self._my_turn(), translated_errors():
            cur = await (await self._connection()).execute(in_schema(sql, self._schema), params)
            return await cur.fetchone()

    async def fetchdicts(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Rows as dicts by column name."""
        async with self._my_turn(), translated_errors():
            cur = (await self._connection()).cursor(row_factory=dict_row)
            await cur.execute(in_schema(sql, self._schema), params)
            return await cur.fetchall()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[DirectConnection]:
        """BEGIN ... COMMIT around the block (ROLLBACK if it raises). The
        block's statements are this task's turn: others wait for COMMIT."""
        async with self._my_turn(), translated_errors():
            conn = await self._connection()
            self._in_transaction = True
            try:
                async with conn.transaction():
                    yield self
            finally:
                self._in_transaction = False

    async def aclose(self) -> None:
        self._closed = True
        await self._drop()

    # --- internals -------------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection[Row]:
        if self._closed:
            raise RuntimeError(f"{self!r} used after aclose()")
        conn = self._conn
        # A statement interrupted by cancellation can leave the session
        # mid-query or mid-transaction: start over rather than guess.
        if conn is not None and not self._in_transaction and (
                conn.closed or conn.broken
                or conn.info.transaction_status is not TransactionStatus.IDLE):
            await self._drop()
            conn = None
        if conn is None:
            conn = self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, application_name=self._application_name,
                connect_timeout=CONNECT_TIMEOUT_SECONDS, **self._connect_args)
        return conn

    @asynccontextmanager
    async def _my_turn(self) -> AsyncIterator[None]:
        task = asyncio.current_task()
        if task is not None and self._turn_holder is task:
            yield  # a statement inside this task's own transaction
            return
        async with self._turn:
            self._turn_holder = task
            try:
                yield
            finally:
                self._turn_holder = None

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            with contextlib.suppress(psycopg.Error):  # it was broken anyway
                await conn.close()


def _first_line(exc: BaseException | None) -> str:
    # Connection failures name hosts and causes, never statement values.
    text = str(exc) if exc is not None else ""
    return f"{type(exc).__name__}: {text.splitlines()[0][:200] if text else ''}"
