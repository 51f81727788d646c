"""Statements from db/queries.py in psycopg's own parameter style.

Our statements are written once, with SQLAlchemy's `:name` parameters (what
`text()` runs on any driver). Where a psycopg connection (or psycopg2's)
runs one directly, SQLAlchemy's own compiler turns it into `%(name)s`, once
per statement: it knows the rules (`::` casts, `%` doubled) so we keep none.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.dialects.postgresql import psycopg

_PSYCOPG = psycopg.dialect()  # type: ignore[no-untyped-call]


def driver_sql(sql: str) -> str:
    """A `:name` statement (as in db/queries.py) in psycopg's own style,
    `%(name)s`, for a psycopg or psycopg2 connection used directly."""
    return text(sql).compile(dialect=_PSYCOPG).string


def binary_params_sql(sql: str) -> str:
    """A `:name` statement (as in db/queries.py) in psycopg's own style with
    every parameter sent in binary: `%(name)b`. Run it with
    `Connection.exec_driver_sql`.

    For arrays this matters: psycopg dumps a text-format array element by
    element in Python (a regex per element to decide on quoting), ~10 us a
    message for an enqueue batch's arrays; the binary dumpers are C, ~1.7 us.
    """
    compiled = text(sql).compile(dialect=_PSYCOPG)
    out = compiled.string
    for name in compiled.binds:
        out = out.replace(f"%({name})s", f"%({name})b")
    return out
