"""The application's database, as its settings describe it.

db/ takes plain values (a URL, the pooler in front of PostgreSQL, the
schema our tables are in) and raises errors of its own. Here
OUTBOX_DATABASE_URL (or the embedded server), OUTBOX_DB_POOLER and
OUTBOX_DB_SCHEMA become those values, and db's errors become one-line
`ConfigurationError`s that name the variable to fix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog
from pydantic import SecretStr

from outbox.db.conninfo import DatabaseTarget, InvalidDatabaseURL, libpq_url
from outbox.db.embedded import EmbeddedServerMissing, embedded_server_url
from outbox.db.pooler import Pooler
from outbox.errors import ConfigurationError
from outbox.logging import register_secret
from outbox.settings import Settings, load_settings

if TYPE_CHECKING:  # SQLAlchemy is loaded by the functions that make engines
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)

# The embedded server's URL per data directory: started (or found) once.
_embedded: dict[str, str] = {}


def normalize_url(url: str | SecretStr) -> str:
    """OUTBOX_DATABASE_URL for SQLAlchemy on psycopg 3 (db.engine.normalize_url).

    Its password is registered with the log redaction, so it is masked in
    any log line it turns up in (a driver's error message, say)."""
    from sqlalchemy.engine import make_url

    from outbox.db import engine as db_engine

    plain = url.get_secret_value() if isinstance(url, SecretStr) else url
    try:
        normalized = db_engine.normalize_url(plain)
    except InvalidDatabaseURL as exc:
        raise ConfigurationError(f"OUTBOX_DATABASE_URL: {exc}") from None
    password = make_url(normalized).password
    if password:
        register_secret(str(password))
    return normalized


def database_url(settings: Settings) -> str:
    """The URL in use: OUTBOX_DATABASE_URL, or the embedded server (started on demand).

    The password is in it: pass it to an engine, print it with
    `outbox.migrate.shown`."""
    if settings.database_url and settings.database_url.get_secret_value():
        return normalize_url(settings.database_url)
    return _embedded_url(settings)


def database_target(settings: Settings, *, url: str | None = None) -> DatabaseTarget:
    """Where the dispatch path's direct connections go: `url` (else
    OUTBOX_DATABASE_URL, else the embedded server) with OUTBOX_DB_POOLER and
    OUTBOX_DB_SCHEMA. Made without SQLAlchemy (db/conninfo.py says why)."""
    if url is None and settings.database_url and settings.database_url.get_secret_value():
        url = settings.database_url.get_secret_value()
    if url is None:
        url = _embedded_url(settings)
    try:
        conninfo = libpq_url(url)
    except InvalidDatabaseURL as exc:
        raise ConfigurationError(f"OUTBOX_DATABASE_URL: {exc}") from None
    password = urlsplit(conninfo).password
    if password:
        register_secret(password)
    return DatabaseTarget(conninfo, settings.db_pooler, settings.db_schema)


def listen_url(settings: Settings, url: str | None = None) -> str | None:
    """Where to LISTEN for wake-ups (a libpq URL), or None: they come from
    polling. OUTBOX_LISTEN_DATABASE_URL if set; else `url` (the database in
    use; default, the configured one) unless a transaction pooler is in
    front of it, where LISTEN can't work. The dispatcher daemon and the
    event hub both ask this."""
    if settings.listen_database_url:
        try:
            return libpq_url(normalize_url(settings.listen_database_url))
        except ConfigurationError as exc:
            raise ConfigurationError(str(exc).replace(
                "OUTBOX_DATABASE_URL", "OUTBOX_LISTEN_DATABASE_URL")) from None
    if settings.db_pooler == "transaction":
        return None
    return libpq_url(url or database_url(settings))


async def listen_forever(url: str, channel: str, on_notify: Callable[[], None], *,
                         application_name: str, log_prefix: str) -> None:
    """LISTEN on `channel` over a connection of its own (never a pool's:
    LISTEN belongs to its session) and call `on_notify` for every NOTIFY,
    and once after each (re)connect: one may have come while we weren't
    listening. A lost connection is retried with backoff, its first failure
    and its recovery logged (`<log_prefix>_lost`, `<log_prefix>_back`).
    Runs until cancelled. The dispatcher daemon and the event hub both
    listen this way."""
    import psycopg

    from outbox.dispatch.backoff import OutageBackoff

    backoff = OutageBackoff()
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                    url, autocommit=True, application_name=application_name) as conn:
                await conn.execute(f"LISTEN {channel}")
                if backoff.succeeded():
                    log.info(f"{log_prefix}_back")
                on_notify()
                async for _ in conn.notifies():
                    on_notify()
        except (psycopg.Error, OSError) as exc:
            delay = backoff.failed()
            if backoff.failures == 1:
                log.warning(f"{log_prefix}_lost", error=type(exc).__name__,
                            retry_in_seconds=round(delay, 3))
            await asyncio.sleep(delay)


def _embedded_url(settings: Settings) -> str:
    key = str(settings.data_dir)
    if key not in _embedded:
        try:
            _embedded[key] = embedded_server_url(settings.data_dir)
        except EmbeddedServerMissing as exc:
            raise ConfigurationError(
                f"OUTBOX_DATABASE_URL is not set and {exc} or set OUTBOX_DATABASE_URL"
            ) from None
    return _embedded[key]


def configured_pooler() -> Pooler:
    """OUTBOX_DB_POOLER, for callers that don't pass one."""
    return load_settings().db_pooler


def configured_schema() -> str:
    """OUTBOX_DB_SCHEMA, for callers that don't pass one."""
    return load_settings().db_schema


def make_engine(url: str, *, pool_size: int = 10, pooler: Pooler | None = None,
                schema: str | None = None, pool_timeout: float = 30.0) -> Engine:
    """An engine for `url` (db.engine.make_engine); `pooler` and `schema`
    default to OUTBOX_DB_POOLER and OUTBOX_DB_SCHEMA."""
    from outbox.db import engine as db_engine

    return db_engine.make_engine(url, pool_size=pool_size,
                                 pooler=pooler or configured_pooler(),
                                 schema=schema or configured_schema(),
                                 pool_timeout=pool_timeout)


def make_async_engine(url: str, *, pool_size: int = 10, pooler: Pooler | None = None,
                      schema: str | None = None) -> AsyncEngine:
    """The asyncio twin of `make_engine`."""
    from outbox.db import engine as db_engine

    return db_engine.make_async_engine(url, pool_size=pool_size,
                                       pooler=pooler or configured_pooler(),
                                       schema=schema or configured_schema())
