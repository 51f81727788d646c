"""db/driver_sql.py converts `:name` statements as SQLAlchemy's compiler does.

It is written out (no SQLAlchemy import on the dispatch path); this checks
it against the compiler itself, on every statement db/ holds and on the
corner cases the rule is about."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql import psycopg

from outbox import db
from outbox.db.driver_sql import binary_params_sql, driver_sql

_DIALECT = psycopg.dialect()  # type: ignore[no-untyped-call]


def _sqlalchemy(sql: str, *, binary: bool = False) -> str:
    compiled = text(sql).compile(dialect=_DIALECT)
    out = compiled.string
    if binary:
        for name in compiled.binds:
            out = out.replace(f"%({name})s", f"%({name})b")
    return out


def _statements() -> Iterator[tuple[str, str]]:
    """Every SQL string constant in db/ (module-level strings and dicts of them)."""
    for info in pkgutil.iter_modules(db.__path__):
        module = importlib.import_module(f"outbox.db.{info.name}")
        for name, value in vars(module).items():
            values = value.values() if isinstance(value, dict) else [value]
            for v in values:
                if isinstance(v, str) and name.isupper() and any(
                        word in v.upper() for word in ("SELECT", "UPDATE", "INSERT", "DELETE")):
                    yield f"{info.name}.{name}", v


STATEMENTS = sorted(set(_statements()))

CORNERS = [
    "SELECT :a",
    "SELECT CAST(:ids AS bigint[]), x::text, :b::int",
    "SELECT 'a:b', ':c' WHERE x LIKE '50%' AND y = :y",
    "SELECT \\:literal, :real",
    "SELECT :a_1, :_b, :c2 FROM t WHERE d=:d)",
    "SELECT make_interval(secs => :s)",
    "SELECT a:b",  # a word before the colon: not a parameter
]


def test_there_are_statements_to_check() -> None:
    assert len(STATEMENTS) > 50


@pytest.mark.parametrize("sql", [s for _, s in STATEMENTS] + CORNERS,
                         ids=[n for n, _ in STATEMENTS] + [f"c{i}" for i in range(len(CORNERS))])
def test_conversion_matches_sqlalchemys_compiler(sql: str) -> None:
    assert driver_sql(sql) == _sqlalchemy(sql)
    assert binary_params_sql(sql) == _sqlalchemy(sql, binary=True)
