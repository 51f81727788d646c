"""Engines and session factories, sync and async, from one URL."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import sessionmaker

from outbox.errors import ConfigurationError
from outbox.settings import Settings

_resolved: dict[str, str] = {}


def normalize_url(url: str) -> str:
    """Accept `postgres://` and `postgresql://` and use the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except Exception:
        raise ConfigurationError("OUTBOX_DATABASE_URL: not a valid database URL") from None
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ConfigurationError("OUTBOX_DATABASE_URL: only PostgreSQL is supported")
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def database_url(settings: Settings) -> str:
    """The URL in use: OUTBOX_DATABASE_URL, or the embedded server (started on demand)."""
    if settings.database_url:
        return normalize_url(settings.database_url)
    key = str(settings.data_dir)
    if key not in _resolved:
        from db.embedded import embedded_server_url

        _resolved[key] = embedded_server_url(settings.data_dir)
    return _resolved[key]


def libpq_url(url: str) -> str:
    """The same URL without the SQLAlchemy driver suffix (for psycopg, psql)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# hide_parameters: SQLAlchemy puts bound values in exception text, and our
# values include message bodies, which must never reach a log.
def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                         hide_parameters=True)


def make_async_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    return create_async_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
        hide_parameters=True,
    )


def session_factory(engine: Engine) -> sessionmaker:  # type: ignore[type-arg]
    return sessionmaker(engine, expire_on_commit=False)
