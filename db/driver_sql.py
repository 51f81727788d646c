"""Statements from db/queries.py in psycopg's own parameter style."""

from __future__ import annotations

import re

_NAMED_PARAM = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def driver_sql(sql: str) -> str:
    """A `:name` statement (as in db/queries.py) in psycopg's own style,
    `%(name)s`, for a psycopg connection used directly (db/direct.py)."""
    return _NAMED_PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


def binary_params_sql(sql: str) -> str:
    """A `:name` statement (as in db/queries.py) in psycopg's own style with
    every parameter sent in binary: `%(name)b`. Run it with
    `Connection.exec_driver_sql`.

    For arrays this matters: psycopg dumps a text-format array element by
    element in Python (a regex per element to decide on quoting), ~10 us a
    message for an enqueue batch's arrays; the binary dumpers are C, ~1.7 us.
    """
    return _NAMED_PARAM.sub(r"%(\1)b", sql.replace("%", "%%"))
