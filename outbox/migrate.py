"""Schema migrations (Alembic), driven from code: `outbox db upgrade`.

Our history is kept in `<schema>.alembic_version` (OUTBOX_DB_SCHEMA), beside
whatever history the application keeps in its own `alembic_version`, which
is never read or written (except to move an installation of ours made
before the schema existed: db/relocation.py).

Failures become one `MigrationError` line (which database, which revision,
what to do) instead of Alembic's or the driver's traceback. Alembic runs an
upgrade in one transaction on PostgreSQL, so a failed one changes nothing,
except past a revision that builds indexes CONCURRENTLY (migrations/online.py):
that one commits the revisions before it, and a failure after that leaves
the database at the last revision committed; the line says which, and the
same command resumes from there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, create_engine, make_url, pool
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from outbox.database import configured_pooler, configured_schema
from outbox.db.engine import driver_connect_args
from outbox.db.relocation import has_version_table, legacy_revision
from outbox.db.schema import VERSION_TABLE
from outbox.errors import MigrationError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(url: str, schema: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats % as interpolation: escape it (passwords, socket paths).
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["schema"] = schema or configured_schema()
    return cfg


def upgrade(url: str, revision: str = "head", *, schema: str | None = None) -> None:
    """Upgrade our tables in `schema` (default OUTBOX_DB_SCHEMA) to `revision`."""
    _run(url, "upgrade", revision, command.upgrade, schema)


def downgrade(url: str, revision: str = "base", *, schema: str | None = None) -> None:
    _run(url, "downgrade", revision, command.downgrade, schema)


def _run(url: str, verb: str, revision: str, step: Callable[[Config, str], None],
         schema: str | None) -> None:
    before = current_revision(url, schema=schema)

    def committed() -> str | None:
        """The revision a failed run left, when it is not the one it began at."""
        try:
            now = current_revision(url, schema=schema)
        except MigrationError:
            return None
        return now if now != before else None

    with _one_line(url, f"{verb} to {revision}", committed=committed):
        step(alembic_config(url, schema), revision)


@contextmanager
def _one_line(url: str, doing: str,
              committed: Callable[[], str | None] = lambda: None) -> Iterator[None]:
    try:
        yield
    except MigrationError:
        raise
    except CommandError as exc:  # unknown target revision, and the like
        raise MigrationError(f"{doing} on {shown(url)}: {_first_line(exc)}") from None
    except DBAPIError as exc:
        if exc.connection_invalidated or exc.orig is None or _is_connect_error(exc):
            raise MigrationError(f"cannot reach database {shown(url)}: "
                                 f"{_first_line(exc.orig or exc)}") from None
        if (at := committed()) is not None:
            raise MigrationError(
                f"{doing} on {shown(url)} failed after revision {at}, which is committed: "
                f"{_first_line(exc.orig)} (fix the cause and run the same command again "
                "to go on from there)") from None
        raise MigrationError(
            f"{doing} on {shown(url)} failed, nothing was changed: {_first_line(exc.orig)}"
            " (if the schema holds tables that aren't whapi-outbox's, set OUTBOX_DB_SCHEMA "
            "to a schema of its own)") from None
    except SQLAlchemyError as exc:
        raise MigrationError(f"{doing} on {shown(url)} failed: {_first_line(exc)}") from None


def _is_connect_error(exc: DBAPIError) -> bool:
    return type(exc.orig).__name__ in ("OperationalError",) and "connect" in str(exc.orig)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def shown(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show nothing of it that could be secret
        return "<unparsable database URL>"


@functools.cache
def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(alembic_config("postgresql://"))
    return frozenset(rev.revision for rev in script.walk_revisions())


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()


def current_revision(url: str, *, schema: str | None = None) -> str | None:
    """The database's revision of our tables (None: no migration applied);
    `MigrationError` when the database can't be reached."""
    engine = create_engine(url, poolclass=pool.NullPool,
                           connect_args=driver_connect_args(url, configured_pooler()))
    try:
        with _one_line(url, "reading the revision"), engine.connect() as conn:
            return revision_on(conn, schema or configured_schema())
    finally:
        engine.dispose()


def revision_on(conn: Connection, schema: str) -> str | None:
    """Our revision as `conn` sees it: in `<schema>.alembic_version`, or, for
    an installation made before the schema (which the next upgrade moves),
    ours in `public.alembic_version`."""
    if has_version_table(conn, schema) or schema == "public":
        return MigrationContext.configure(conn, opts={
            "version_table": VERSION_TABLE, "version_table_schema": schema,
        }).get_current_revision()
    return legacy_revision(conn, known_revisions())


def is_at_head(url: str) -> bool:
    return current_revision(url) == head_revision()


def skip_outbox_schema(schema: str | None = None) -> Callable[[str | None, str, Any], bool]:
    """An `include_name` for the application's own Alembic env.py, so its
    autogenerate never proposes changes to our schema (`schema`, default
    OUTBOX_DB_SCHEMA)::

        from outbox.migrate import skip_outbox_schema

        context.configure(..., include_schemas=True, include_name=skip_outbox_schema())

    Needed only with `include_schemas=True`: without it Alembic compares the
    default schema alone, which holds nothing of ours.
    """
    ours = schema or configured_schema()

    def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
        return not (type_ == "schema" and name == ours)

    return include_name
