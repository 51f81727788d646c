"""db/ is the lower layer: it imports nothing from the rest of `outbox`.

It takes plain values (URL, pooler, schema) and raises its own errors;
outbox/database.py turns settings into those values and db's errors into
`ConfigurationError`. An import the other way round would tie every db
module to the settings (and their environment) again.
"""

from __future__ import annotations

import ast
from pathlib import Path

DB = Path(__file__).resolve().parent.parent / "db"


def _imported_modules(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            # `from outbox.db import queries` takes the module outbox.db.queries
            out.update(f"{node.module}.{alias.name}" for alias in node.names)
    return out


def test_db_imports_nothing_from_outbox() -> None:
    modules = sorted(DB.glob("*.py"))
    assert len(modules) > 5, modules  # the walk sees db/'s modules
    upward = {f"{p.name}: {m}" for p in modules for m in _imported_modules(p)
              if (m == "outbox" or m.startswith("outbox.")) and not m.startswith("outbox.db")}
    assert upward == set()


DISPATCH = DB.parent / "outbox" / "dispatch"


def test_the_worker_runs_its_statements_through_the_dispatch_store() -> None:
    """outbox/dispatch/ holds no SQL of its own: db/dispatch_store.py runs
    every statement the dispatcher needs (one error translation, one place
    to read them), so no worker module takes statements from db/ itself."""
    modules = sorted(DISPATCH.glob("*.py"))
    assert len(modules) > 5, modules
    direct = {f"{p.name}: {m}" for p in modules for m in _imported_modules(p)
              if m.startswith("outbox.db.") and (m.endswith("queries")
                                                  or m == "outbox.db.driver_sql")}
    assert direct == set()
