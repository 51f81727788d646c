"""Statements from db/queries.py in psycopg's own parameter style.

Our statements are written once, with SQLAlchemy's `:name` parameters (what
`text()` runs on any driver). Where a psycopg connection (or psycopg2's)
runs one directly, it needs `%(name)s`. The conversion follows SQLAlchemy's
own rules for `text()` on psycopg (a `:name` not inside a `::` cast, `\\:`
for a literal colon, `%` doubled), written out here so the dispatcher's
process never imports SQLAlchemy for it: a cron pass pays every import on
each start. tests/test_driver_sql.py checks it against SQLAlchemy's
compiler for every statement in db/.
"""

from __future__ import annotations

import re

# SQLAlchemy's TextClause._bind_params_regex and its compiler's escape rule.
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?![:\w])")
_ESCAPED_COLON = re.compile(r"\\(:\w*)(?![:\w])")


def driver_sql(sql: str) -> str:
    """A `:name` statement (as in db/queries.py) in psycopg's own style,
    `%(name)s`, for a psycopg or psycopg2 connection used directly."""
    return _convert(sql, "s")


def binary_params_sql(sql: str) -> str:
    """A `:name` statement (as in db/queries.py) in psycopg's own style with
    every parameter sent in binary: `%(name)b`. Run it with
    `Connection.exec_driver_sql`.

    For arrays this matters: psycopg dumps a text-format array element by
    element in Python (a regex per element to decide on quoting), ~10 us a
    message for an enqueue batch's arrays; the binary dumpers are C, ~1.7 us.
    """
    return _convert(sql, "b")


def _convert(sql: str, marker: str) -> str:
    named = _BIND.sub(lambda m: f"%({m.group(1)}){marker}", sql.replace("%", "%%"))
    return _ESCAPED_COLON.sub(lambda m: m.group(1), named)
