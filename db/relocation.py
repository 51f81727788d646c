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

from outbox.db.schema import FUNCTIONS, TABLES, VERSION_TABLE

# Our tables as the last release before the schema made them.
LEGACY_TABLES = tuple(t for t in TABLES if t != VERSION_TABLE)

TABLE_EXISTS = "SELECT to_regclass(:table) IS NOT NULL"
FUNCTION_EXISTS = "SELECT to_regprocedure(:function) IS NOT NULL"
SCHEMA_EXISTS = "SELECT 1 FROM pg_namespace WHERE nspname = :schema"
LEGACY_REVISIONS = "SELECT version_num FROM public.alembic_version"
DELETE_LEGACY_REVISION = "DELETE FROM public.alembic_version WHERE version_num = :revision"
# The table was made for us; one that still holds another history's row stays.
DROP_EMPTY_LEGACY_VERSION_TABLE = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM public.alembic_version) THEN
        DROP TABLE public.alembic_version;
    END IF;
END $$
"""

# DDL names a schema, which no parameter can: the name is put in
# (OUTBOX_DB_SCHEMA's are checked by db/schema.py check_schema_name).
CREATE_SCHEMA = "CREATE SCHEMA {schema}"
MOVE_TABLE = "ALTER TABLE public.{table} SET SCHEMA {schema}"
MOVE_FUNCTION = "ALTER FUNCTION public.{function} SET SCHEMA {schema}"
CREATE_VERSION_TABLE = """
CREATE TABLE {schema}.{table} (
    version_num varchar(32) NOT NULL,
    CONSTRAINT {table}_pkc PRIMARY KEY (version_num)
)
"""
INSERT_REVISION = "INSERT INTO {schema}.{table} VALUES (:revision)"


def legacy_revision(conn: Connection, known: Collection[str]) -> str | None:
    """Our revision in `public.alembic_version`, if an installation of ours is there."""
    if not conn.execute(text(TABLE_EXISTS), {"table": "public.alembic_version"}).scalar():
        return None
    ours = [r for r in conn.execute(text(LEGACY_REVISIONS)).scalars() if r in known]
    return ours[0] if ours else None


def has_version_table(conn: Connection, schema: str) -> bool:
    return bool(conn.execute(text(TABLE_EXISTS),
                             {"table": f"{schema}.{VERSION_TABLE}"}).scalar())


def ensure_schema(conn: Connection, schema: str) -> None:
    """Create `schema` unless it exists. Asked first: CREATE SCHEMA IF NOT
    EXISTS needs the CREATE privilege on the database even when the schema
    is there, and a migration role may only own a schema made for it."""
    if not conn.execute(text(SCHEMA_EXISTS), {"schema": schema}).scalar():
        conn.execute(text(CREATE_SCHEMA.format(schema=schema)))


def move_into_schema(conn: Connection, schema: str, revision: str) -> list[str]:
    """Move our tables from `public` into `schema` (made if missing) and the
    revision with them; the tables moved. Run inside the upgrade's transaction."""
    ensure_schema(conn, schema)
    moved = []
    for table in LEGACY_TABLES:
        if conn.execute(text(TABLE_EXISTS), {"table": f"public.{table}"}).scalar():
            conn.execute(text(MOVE_TABLE.format(table=table, schema=schema)))
            moved.append(table)
    for function in FUNCTIONS:  # statements call them by the schema's name
        if conn.execute(text(FUNCTION_EXISTS), {"function": f"public.{function}"}).scalar():
            conn.execute(text(MOVE_FUNCTION.format(function=function, schema=schema)))
    conn.execute(text(CREATE_VERSION_TABLE.format(schema=schema, table=VERSION_TABLE)))
    conn.execute(text(INSERT_REVISION.format(schema=schema, table=VERSION_TABLE)),
                 {"revision": revision})
    conn.execute(text(DELETE_LEGACY_REVISION), {"revision": revision})
    conn.execute(text(DROP_EMPTY_LEGACY_VERSION_TABLE))
    return moved
