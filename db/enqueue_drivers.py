"""ENQUEUE on the caller's own connection, whatever its driver.

`outbox.enqueue` decides what to write; this module runs its statements
(db/queries.py: ENQUEUE, CHANNELS_FOR_ENQUEUE) on what the caller handed in,
inside the caller's transaction, never committing or closing it:

* a SQLAlchemy `Session` on psycopg 3 (sync, or async through `run_sync`):
  parameters sent in binary through `exec_driver_sql`, the fast path
  (`binary_params_sql` says why);
* a `Session` on any other PostgreSQL driver (psycopg2, asyncpg, ...):
  `text()` with bound parameters, typed by the statements' own CASTs;
* a plain DB-API connection, psycopg 3 or psycopg2 (Django's
  `connection.connection`): a cursor of our own on it.

Batches run with nested loops and JIT off (`batch_plan_settings` says why),
on every driver: the settings are changed with set_config(..., true), local
to the transaction, and the caller's values are put back after the
statement. Other drivers may run a batch as a prepared statement (asyncpg
prepares every statement), and PostgreSQL may then keep a generic plan;
there that plan was no slower than custom ones (docs/performance.md), so
the choice is left to PostgreSQL.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg.rows import tuple_row
from sqlalchemy import text
from sqlalchemy.orm import Session

from outbox.db import queries
from outbox.db.driver_sql import binary_params_sql, driver_sql
from outbox.db.schema import DEFAULT_SCHEMA, in_schema

Row = tuple[Any, ...]

# psycopg 3 through exec_driver_sql: binary parameters (see binary_params_sql).
ENQUEUE_SQL = binary_params_sql(queries.ENQUEUE)
# Each statement converted once (SQLAlchemy also caches a TextClause's compilation).
_text = functools.cache(text)
_driver_sql = functools.cache(driver_sql)

# Batches: the caller's planner settings are read, changed for the statement
# (locally to the transaction) and put back (batch_plan_settings says why).
_BATCH_SETTINGS_OFF = (
    "SELECT current_setting('enable_nestloop') AS nestloop, current_setting('jit') AS jit, "
    "set_config('enable_nestloop', 'off', true), set_config('jit', 'off', true)"
)
_RESTORE_SETTINGS = (
    "SELECT set_config('enable_nestloop', :nestloop, true), set_config('jit', :jit, true)"
)


@functools.cache
def enqueue_sql(schema: str) -> str:
    """ENQUEUE for psycopg 3, our tables in `schema`."""
    return in_schema(ENQUEUE_SQL, schema)


class AutocommitConnection(ValueError):
    """A DB-API connection in autocommit mode: no transaction of the caller's
    for the messages to join."""


class EnqueueRunner(ABC):
    """Runs the enqueue statements on one caller's connection; our tables
    are named in `schema` (db/schema.py), whatever the caller's search_path."""

    def __init__(self, target: Any, schema: str = DEFAULT_SCHEMA) -> None:
        self._target = target
        self._schema = schema

    def enqueue(self, params: dict[str, Any], *, batch: bool) -> list[Row]:
        """ENQUEUE's rows (kind, message_id, outbox_id, chat_id, ord, phone,
        workspace_id), uuids as `uuid.UUID`. A batch is planned for its size."""
        if not batch:
            return self._enqueue(params, batch=False)
        with self.batch_planned():
            return self._enqueue(params, batch=True)

    @contextlib.contextmanager
    def batch_planned(self) -> Iterator[None]:
        """Nested loops and JIT off for one statement (`batch_plan_settings`
        says why), the caller's values put back after it."""
        nestloop, jit, *_ = self._fetch(_BATCH_SETTINGS_OFF, {})[0]
        yield
        # On error the transaction is aborted and the caller's rollback
        # restores the settings; on success, restore them now.
        self._fetch(_RESTORE_SETTINGS, {"nestloop": nestloop, "jit": jit})

    def channel_statuses(self, params: dict[str, Any]) -> dict[uuid.UUID, str]:
        """CHANNELS_FOR_ENQUEUE: each channel's status, by id."""
        return {_uuid(id_): status
                for id_, status in self._fetch(queries.CHANNELS_FOR_ENQUEUE, params)}

    @abstractmethod
    def _enqueue(self, params: dict[str, Any], *, batch: bool) -> list[Row]: ...

    @abstractmethod
    def _fetch(self, sql: str, params: dict[str, Any]) -> list[Row]:
        """Run a `:name` statement from db/queries.py (or above); its rows."""


def runner_for(target: Any, schema: str = DEFAULT_SCHEMA) -> EnqueueRunner:
    """The runner for a SQLAlchemy `Session` or a DB-API connection.

    Raises `TypeError` for anything else, and `AutocommitConnection` for a
    DB-API connection in autocommit mode: there is no transaction of the
    caller's to join, so the messages would be queued at once, whatever
    happens to the caller's other writes.
    """
    if isinstance(target, Session):
        if target.connection().dialect.driver == "psycopg":  # sync and async alike
            return _PsycopgSession(target, schema)
        return _PortableSession(target, schema)
    if isinstance(target, psycopg.Connection):
        _check_in_transaction(target.autocommit)
        return _PsycopgConnection(target, schema)
    if _is_psycopg2_connection(target):
        _check_in_transaction(target.autocommit)
        return _Psycopg2Connection(target, schema)
    hint = ""
    if getattr(target, "vendor", None) == "postgresql":  # Django's connection wrapper
        hint = ": with Django, pass django.db.connection.connection inside transaction.atomic()"
    raise TypeError(
        "enqueue needs a SQLAlchemy Session or AsyncSession, or a psycopg or psycopg2 "
        f"connection, not {type(target).__name__}{hint}"
    )


# --- SQLAlchemy sessions ------------------------------------------------------


class _SessionRunner(EnqueueRunner):
    """A SQLAlchemy `Session`: small statements through `text()`."""

    def __init__(self, session: Session, schema: str = DEFAULT_SCHEMA) -> None:
        super().__init__(session, schema)
        self._session = session

    def _fetch(self, sql: str, params: dict[str, Any]) -> list[Row]:
        return [tuple(r) for r in self._session.execute(_text(in_schema(sql, self._schema)),
                                                        params)]


class _PsycopgSession(_SessionRunner):
    """psycopg 3: binary parameters, and batches unprepared."""

    def _enqueue(self, params: dict[str, Any], *, batch: bool) -> list[Row]:
        # Plain tuples: a Row's attribute lookup was 10% of the Python time
        # of a bulk enqueue. psycopg already returns uuid.UUID.
        rows = self._session.connection().exec_driver_sql(enqueue_sql(self._schema), params).all()
        return list(map(tuple, rows))

    @contextlib.contextmanager
    def batch_planned(self) -> Iterator[None]:
        driver = self._session.connection().connection.driver_connection
        assert driver is not None  # a checked-out connection always has one
        threshold = driver.prepare_threshold
        driver.prepare_threshold = None
        try:
            with super().batch_planned():
                yield
        finally:
            driver.prepare_threshold = threshold


class _PortableSession(_SessionRunner):
    """Any other driver: SQLAlchemy binds the parameters its driver's way."""

    def _enqueue(self, params: dict[str, Any], *, batch: bool) -> list[Row]:
        return _plain_uuids(self._fetch(queries.ENQUEUE, params))


def batch_plan_settings(session: Session) -> contextlib.AbstractContextManager[None]:
    """Plan the ENQUEUE of a batch for its size, in the caller's transaction
    (a `Session` on psycopg 3).

    The planner can't see how many rows unnest() of bound arrays yields (it
    guesses 10 to 100) and so nested-loops the joins between the CTEs,
    comparing every row of a batch with every other. For this one
    statement, nested loops are off; the table lookups are LATERAL index
    probes, which stay nested loops (the only way to run them). That makes
    the estimated cost huge (PostgreSQL prices a disabled join type at
    10^10), which would start JIT compilation for every batch, so JIT is off
    too. And psycopg would prepare the statement after 5 runs, after which
    PostgreSQL keeps a generic plan that is many times slower for a batch.
    So batches run unprepared (figures: docs/performance.md).
    """
    return _PsycopgSession(session).batch_planned()


# --- DB-API connections -------------------------------------------------------


class _PsycopgConnection(EnqueueRunner):
    """A psycopg 3 connection: the same binary statement as the session path.

    Our own server-side-binding cursor returning tuples, whatever the
    connection's cursor factory (Django's default binds client-side, which
    can't send binary) or row factory.
    """

    def __init__(self, conn: psycopg.Connection[Any], schema: str = DEFAULT_SCHEMA) -> None:
        super().__init__(conn, schema)
        self._conn = conn

    def _enqueue(self, params: dict[str, Any], *, batch: bool) -> list[Row]:
        with psycopg.Cursor(self._conn, row_factory=tuple_row) as cur:
            # prepare=False: per statement, so the connection's own
            # prepare_threshold is left as the caller set it.
            cur.execute(enqueue_sql(self._schema), params, prepare=False if batch else None)
            return list(cur.fetchall())

    def _fetch(self, sql: str, params: dict[str, Any]) -> list[Row]:
        with psycopg.Cursor(self._conn, row_factory=tuple_row) as cur:
            cur.execute(_driver_sql(in_schema(sql, self._schema)), params)
            return list(cur.fetchall())


class _Psycopg2Connection(EnqueueRunner):
    """A psycopg2 connection: parameters interpolated by psycopg2.

    uuids go as text (the statements cast them): psycopg2 adapts
    `uuid.UUID` only once `register_uuid` ran, which is the application's
    choice (Django makes it; a bare psycopg2 doesn't), and so is whether
    uuids come back as text. A plain cursor, whatever the connection's
    cursor factory (a dict cursor would change the rows' shape).
    """

    def __init__(self, conn: Any, schema: str = DEFAULT_SCHEMA) -> None:
        super().__init__(conn, schema)
        self._conn = conn

    def _enqueue(self, params: dict[str, Any], *, batch: bool) -> list[Row]:
        return _plain_uuids(self._fetch(queries.ENQUEUE, params))

    def _fetch(self, sql: str, params: dict[str, Any]) -> list[Row]:
        import psycopg2.extensions

        with self._conn.cursor(cursor_factory=psycopg2.extensions.cursor) as cur:
            cur.execute(_driver_sql(in_schema(sql, self._schema)),
                        {k: _uuids_as_text(v) for k, v in params.items()})
            return [tuple(r) for r in cur.fetchall()]


def _is_psycopg2_connection(target: Any) -> bool:
    try:
        import psycopg2.extensions
    except ImportError:
        return False
    return isinstance(target, psycopg2.extensions.connection)


def _check_in_transaction(autocommit: bool) -> None:
    if autocommit:
        raise AutocommitConnection(
            "the connection is in autocommit mode: enqueue inside a transaction (with Django, "
            "inside transaction.atomic()) so the message is queued only if it commits"
        )


def _uuids_as_text(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list) and value and isinstance(value[0], uuid.UUID):
        return [str(v) for v in value]
    return value


def _uuid(value: Any) -> Any:
    # asyncpg returns its own uuid.UUID subclass, psycopg2 maybe text.
    if value is None or type(value) is uuid.UUID:
        return value
    if isinstance(value, uuid.UUID):
        return uuid.UUID(int=value.int)
    return uuid.UUID(value)


def _plain_uuids(rows: Any) -> list[Row]:
    return [(kind, _uuid(message_id), outbox_id, _uuid(chat_id), *rest)
            for kind, message_id, outbox_id, chat_id, *rest in rows]
