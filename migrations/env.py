"""Alembic environment: the URL comes from the caller (outbox.migrate).

Everything runs in our schema (OUTBOX_DB_SCHEMA, db/schema.py): the version
table is `<schema>.alembic_version`, and the revisions' unqualified names
resolve there through a `search_path` set for the upgrade's transaction
only (SET LOCAL: nothing outlives it, even through a transaction pooler).
An installation from before the schema existed is moved into it first, in
the same transaction (db/relocation.py).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, engine_from_config, pool, text

from outbox.database import configured_pooler, configured_schema
from outbox.db.engine import driver_connect_args
from outbox.db.models import Base
from outbox.db.relocation import ensure_schema, has_version_table, legacy_revision, move_into_schema
from outbox.db.schema import VERSION_TABLE

config = context.config
target_metadata = Base.metadata
schema: str = config.attributes.get("schema") or configured_schema()


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate looks at our schema only, and not at its version table
    (Alembic skips that by itself only in the default schema)."""
    if type_ == "schema":
        return name == schema
    return not (type_ == "table" and name == VERSION_TABLE)


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        version_table_schema=schema,
    )
    with context.begin_transaction():
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        context.execute(f"SET LOCAL search_path TO {schema}")
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      version_table=VERSION_TABLE, version_table_schema=schema,
                      include_schemas=True, include_name=include_name)
    with context.begin_transaction():
        if schema != "public" and not has_version_table(connection, schema):
            ours = {rev.revision for rev in context.script.walk_revisions()}
            revision = legacy_revision(connection, ours)
            if revision is not None:
                move_into_schema(connection, schema, revision)
        ensure_schema(connection, schema)
        connection.execute(text(f"SET LOCAL search_path TO {schema}"))
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        _run(connectable)
        return
    url = config.get_main_option("sqlalchemy.url") or ""
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
        # Behind a transaction pooler: no server-side prepared statements.
        connect_args=driver_connect_args(url, configured_pooler()),
    )
    with engine.connect() as connection:
        _run(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
