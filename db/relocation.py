"""Moving an installation made before OUTBOX_DB_SCHEMA into its schema.

Until then our tables were created in `public` and our revision kept in
`public.alembic_version`, the table an application's own Alembic history
uses. `outbox db upgrade` finds such an installation by its revision (one
of ours) and, in the upgrade's transaction, moves every table of ours into
the schema (`ALTER TABLE ... SET SCHEMA` keeps rows, indexes, constraints
and identity sequences as they are: no row is rewritten) and carries the
revision into `<schema>.alembic_version`.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import Connection, text

from outbox.db.schema import TABLES, VERSION_TABLE

# Our tables as the last release before the schema made them.
LEGACY_TABLES = tuple(t for t in TABLES if t != VERSION_TABLE)

TABLE_EXISTS = "SELECT to_regclass(:table) IS NOT NULL"


def legacy_revision(conn: Connection, known: Collection[str]) -> str | None:
    """Our revision in `public.alembic_version`, if an installation of ours is there."""
    if not conn.execute(text(TABLE_EXISTS), {"table": "public.alembic_version"}).scalar():
        return None
    ours = [r for r in conn.execute(text("SELECT version_num FROM public.alembic_version"))
            .scalars() if r in known]
    return ours[0] if ours else None


def has_version_table(conn: Connection, schema: str) -> bool:
    return bool(conn.execute(text(TABLE_EXISTS),
                             {"table": f"{schema}.{VERSION_TABLE}"}).scalar())


def ensure_schema(conn: Connection, schema: str) -> None:
    """Create `schema` unless it exists. Asked first: CREATE SCHEMA IF NOT
    EXISTS needs the CREATE privilege on the database even when the schema
    is there, and a migration role may only own a schema made for it."""
    if not conn.execute(text("SELECT 1 FROM pg_namespace WHERE nspname = :s"),
                        {"s": schema}).scalar():
        conn.execute(text(f"CREATE SCHEMA {schema}"))


def move_into_schema(conn: Connection, schema: str, revision: str) -> list[str]:
    """Move our tables from `public` into `schema` (made if missing) and the
    revision with them; the tables moved. Run inside the upgrade's transaction."""
    ensure_schema(conn, schema)
    moved = []
    for table in LEGACY_TABLES:
        if conn.execute(text(TABLE_EXISTS), {"table": f"public.{table}"}).scalar():
            conn.execute(text(f"ALTER TABLE public.{table} SET SCHEMA {schema}"))
            moved.append(table)
    conn.execute(text(
        f"CREATE TABLE {schema}.{VERSION_TABLE} (version_num varchar(32) NOT NULL, "
        f"CONSTRAINT {VERSION_TABLE}_pkc PRIMARY KEY (version_num))"))
    conn.execute(text(f"INSERT INTO {schema}.{VERSION_TABLE} VALUES (:v)"), {"v": revision})
    conn.execute(text("DELETE FROM public.alembic_version WHERE version_num = :v"),
                 {"v": revision})
    # The table was made for us; one that still holds another history's row stays.
    conn.execute(text(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM public.alembic_version) THEN "
        "DROP TABLE public.alembic_version; END IF; END $$"))
    return moved
