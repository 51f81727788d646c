"""Engines and session factories, sync and async, from one URL.

Behind a transaction-mode pooler (OUTBOX_DB_POOLER=transaction) every
engine is made without server-side prepared statements: the pooler hands
each transaction to whichever server connection is free, so a statement
psycopg prepared on one ("_pg3_0") is missing on the next, or a different
one of that name is there ("bind message supplies 4 parameters, but
prepared statement "_pg3_0" requires 16"). psycopg 3 prepares a query
after its fifth run, so this showed up only under load.

Everything here takes plain values (a URL, the pooler, the schema) and
raises its own errors: outbox/database.py is where the settings
(OUTBOX_DATABASE_URL, OUTBOX_DB_POOLER, OUTBOX_DB_SCHEMA) become them.
"""

from __future__ import annotations

from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import sessionmaker

from outbox.db.conninfo import (
    DatabaseTarget,
    InvalidDatabaseURL,
    libpq_url,
    prepares_statements,
    psycopg_connect_args,
)
from outbox.db.pooler import Pooler  # what sits between us and PostgreSQL
from outbox.db.schema import DEFAULT_SCHEMA, in_schema

# The pooler each engine was made for, so connections opened beside it
# (db/direct.py) follow the same rule.
_poolers: WeakKeyDictionary[Engine, Pooler] = WeakKeyDictionary()
# Likewise the schema our tables are in (db/schema.py).
_schemas: WeakKeyDictionary[Engine, str] = WeakKeyDictionary()


def normalize_url(url: str) -> str:
    """Accept `postgres://` and `postgresql://` and use the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except Exception:
        raise InvalidDatabaseURL("not a valid database URL") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise InvalidDatabaseURL("only PostgreSQL is supported")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def driver_connect_args(url: str, pooler: Pooler) -> dict[str, Any]:
    if prepares_statements(pooler):
        return {}
    driver = make_url(url).get_driver_name()
    if driver.startswith("psycopg") and driver != "psycopg2":
        return psycopg_connect_args(pooler)
    if driver == "asyncpg":  # its statement cache and SQLAlchemy's, both named statements
        return {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
    return {}  # psycopg2 never prepares


def engine_pooler(engine: Engine | AsyncEngine) -> Pooler:
    """The pooler `engine` was made for ("none" for engines made elsewhere)."""
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    return _poolers.get(sync, "none")


def engine_target(engine: Engine | AsyncEngine) -> DatabaseTarget:
    """Direct connections to the database `engine` points at (same URL,
    credentials, pooler and schema)."""
    url = engine.url.render_as_string(hide_password=False)
    return DatabaseTarget(libpq_url(url), engine_pooler(engine), engine_schema(engine))


def engine_schema(engine: Engine | AsyncEngine) -> str:
    """The schema `engine`'s statements use for our tables."""
    sync = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    return _schemas.get(sync, DEFAULT_SCHEMA)


def _use_schema(engine: Engine, pooler: Pooler, schema: str) -> None:
    """Remember the engine's pooler and schema; in another schema than the
    default, every statement it runs names that one (db/schema.py)."""
    _poolers[engine] = pooler
    _schemas[engine] = schema
    if schema == DEFAULT_SCHEMA:
        return

    def qualify(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> tuple[str, Any]:
        return in_schema(statement, schema), parameters

    event.listen(engine, "before_cursor_execute", qualify, retval=True)


# hide_parameters: SQLAlchemy puts bound values in exception text, and our
# values include message bodies, which must never reach a log.
def make_engine(url: str, *, pool_size: int = 10, pooler: Pooler, schema: str,
                pool_timeout: float = 30.0) -> Engine:
    """`pooler`: what sits in front of PostgreSQL; `schema`: where our tables
    are; `pool_timeout`: seconds to wait for a free connection before
    `sqlalchemy.exc.TimeoutError`."""
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                           pool_timeout=pool_timeout, hide_parameters=True,
                           connect_args=driver_connect_args(url, pooler))
    _use_schema(engine, pooler, schema)
    return engine


def make_async_engine(url: str, *, pool_size: int = 10, pooler: Pooler,
                      schema: str) -> AsyncEngine:
    """`pooler`: what sits in front of PostgreSQL; `schema`: where our tables are."""
    engine = create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
        hide_parameters=True, connect_args=driver_connect_args(url, pooler),
    )
    _use_schema(engine.sync_engine, pooler, schema)
    return engine


def session_factory(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    return sessionmaker(engine, expire_on_commit=False)
