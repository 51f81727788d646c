"""Migrations on a fresh database of their own: up, down to nothing, up again;
and the models (db/models.py) describe exactly what the migrations create."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect, pool, text

from db.admin import create_database, drop_database
from tests.conftest import _server_url


@pytest.fixture
def fresh_database_url() -> Iterator[str]:
    server_url = _server_url()
    name = f"outbox_migr_{os.getpid()}_{secrets.token_hex(3)}"
    url = create_database(server_url, name)
    try:
        yield url
    finally:
        drop_database(server_url, name)


def _schema(url: str) -> tuple[set[str], dict[str, list[str]]]:
    """Tables (besides alembic_version) and, per table, its index names."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        insp = inspect(engine)
        tables = set(insp.get_table_names()) - {"alembic_version"}
        indexes = {t: sorted(i["name"] or "" for i in insp.get_indexes(t)) for t in tables}
        return tables, indexes
    finally:
        engine.dispose()


def _leftovers(url: str) -> list[str]:
    """Anything user-made still in the public schema: tables, sequences, views, types."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT c.relkind::text || ':' || c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relname <> 'alembic_version' "
                "AND c.relname NOT LIKE 'alembic_version%' "
                "UNION ALL SELECT 't:' || t.typname::text FROM pg_type t "
                "JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd')")).scalars())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(fresh_database_url: str) -> None:
    from db.models import Base
    from outbox.migrate import current_revision, downgrade, head_revision, upgrade

    url = fresh_database_url
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == head_revision()
    tables, indexes = _schema(url)
    assert tables == set(Base.metadata.tables)

    downgrade(url, "base")
    assert current_revision(url) is None
    assert _schema(url)[0] == set()
    assert _leftovers(url) == []

    upgrade(url)
    assert current_revision(url) == head_revision()
    assert _schema(url) == (tables, indexes)


def test_models_match_migrations(fresh_database_url: str) -> None:
    """Alembic's autogenerate finds nothing to add, drop or alter."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from db.models import Base
    from outbox.migrate import upgrade

    upgrade(fresh_database_url)
    engine = create_engine(fresh_database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "compare_type": True, "compare_server_default": True})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], "models and migrations disagree:\n" + "\n".join(map(repr, diff))
