"""Where a direct psycopg connection goes, without SQLAlchemy.

The dispatcher runs its statements on psycopg connections of its own
(db/direct.py). Everything they need to connect is here: the libpq URL,
the pooler in front of PostgreSQL and the schema our tables are in. A cron
pass (`outbox dispatch --once`) builds this from its settings and never
imports SQLAlchemy, which is the largest import it used to pay on every
start; code that has an engine gets the same from `engine_target`
(db/engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from outbox.db.pooler import Pooler
from outbox.db.schema import DEFAULT_SCHEMA

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine


class InvalidDatabaseURL(ValueError):
    """Not a URL we can connect with (not a URL, or not PostgreSQL's)."""


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    """A database for direct connections: `conninfo` is a libpq URL (its
    password included), `pooler` what sits in front of PostgreSQL, `schema`
    where our tables are."""

    conninfo: str
    pooler: Pooler = "none"
    schema: str = DEFAULT_SCHEMA

    def __repr__(self) -> str:  # never the password
        parts = urlsplit(self.conninfo)
        where = f"{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"
        return f"DatabaseTarget({where!r}, pooler={self.pooler!r}, schema={self.schema!r})"


def as_target(database: DatabaseTarget | AsyncEngine) -> DatabaseTarget:
    """What the dispatch path takes as "the database": a target, or an
    engine (tests, the HTTP service's cron endpoint) a target is taken from."""
    if isinstance(database, DatabaseTarget):
        return database
    from outbox.db.engine import engine_target

    return engine_target(database)


def libpq_url(url: str) -> str:
    """`url` (postgres://, postgresql:// or postgresql+driver://) as a libpq
    URL, for psycopg and psql."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidDatabaseURL("not a valid database URL")
    if scheme.split("+", 1)[0] not in ("postgresql", "postgres"):
        raise InvalidDatabaseURL("only PostgreSQL is supported")
    if rest.split("/", 1)[0].count("@") > 1:
        # An unescaped "@" in the password: SQLAlchemy's parser takes the
        # last one as the separator and escapes the rest; so do we.
        from sqlalchemy.engine import make_url

        return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return "postgresql://" + rest


def prepares_statements(pooler: Pooler) -> bool:
    """Whether connections may keep server-side prepared statements."""
    return pooler != "transaction"


def psycopg_connect_args(pooler: Pooler) -> dict[str, Any]:
    """Keyword arguments for psycopg's connect() under this pooler."""
    return {} if prepares_statements(pooler) else {"prepare_threshold": None}
