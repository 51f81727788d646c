"""Create and drop whole databases next to a server (tests, demo, benchmark)."""

from __future__ import annotations

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from outbox.db.conninfo import libpq_url


def create_database(server_url: str, name: str, *, replace: bool = False) -> str:
    """Create database `name` on the server of `server_url` (dropping one of that
    name first if `replace`); return a SQLAlchemy URL for it."""
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        if replace:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    """Drop database `name` (and end its sessions) if it exists."""
    with psycopg.connect(libpq_url(server_url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
