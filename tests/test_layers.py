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
    return out


def test_db_imports_nothing_from_outbox() -> None:
    modules = sorted(DB.glob("*.py"))
    assert len(modules) > 5, modules  # the walk sees db/'s modules
    upward = {f"{p.name}: {m}" for p in modules for m in _imported_modules(p)
              if (m == "outbox" or m.startswith("outbox.")) and not m.startswith("outbox.db")}
    assert upward == set()
