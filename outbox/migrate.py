"""Schema migrations (Alembic), driven from code: `outbox db upgrade`.

Failures become one `MigrationError` line (which database, which revision,
what to do) instead of Alembic's or the driver's traceback. Alembic runs an
upgrade in one transaction on PostgreSQL, so a failed one changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import create_engine, make_url, pool
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from db.engine import configured_pooler, driver_connect_args
from outbox.errors import MigrationError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser treats % as interpolation: escape it (passwords, socket paths).
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    _run(url, "upgrade", revision, command.upgrade)


def downgrade(url: str, revision: str = "base") -> None:
    _run(url, "downgrade", revision, command.downgrade)


def _run(url: str, verb: str, revision: str, step: Callable[[Config, str], None]) -> None:
    with _one_line(url, f"{verb} to {revision}"):
        current = current_revision(url)
        if current is not None and current not in known_revisions():
            raise MigrationError(
                f"database {shown(url)} is at revision {current!r}, which is not one of "
                f"whapi-outbox's (head {head_revision()}): its alembic_version table belongs "
                "to another migration history; give whapi-outbox a database of its own "
                "(OUTBOX_DATABASE_URL) until it can keep a history of its own beside it")
        step(alembic_config(url), revision)


@contextmanager
def _one_line(url: str, doing: str) -> Iterator[None]:
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
        raise MigrationError(
            f"{doing} on {shown(url)} failed, nothing was changed: {_first_line(exc.orig)}"
            " (a table of that name may belong to the application: whapi-outbox needs a "
            "database without tables named like its own for now)") from None
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


def known_revisions() -> set[str]:
    script = ScriptDirectory.from_config(alembic_config("postgresql://"))
    return {rev.revision for rev in script.walk_revisions()}


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()


def current_revision(url: str) -> str | None:
    """The database's revision (None: no migration applied); `MigrationError`
    when the database can't be reached."""
    engine = create_engine(url, poolclass=pool.NullPool,
                           connect_args=driver_connect_args(url, configured_pooler()))
    try:
        with _one_line(url, "reading the revision"), engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def is_at_head(url: str) -> bool:
    return current_revision(url) == head_revision()
