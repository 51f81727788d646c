"""Schema changes that don't stop writes on tables that may be big.

An upgrade runs in one transaction (migrations/env.py). There, CREATE INDEX
holds a SHARE lock on its table until the commit (no insert, update or
delete for the whole build), and VALIDATE CONSTRAINT after an ADD CONSTRAINT
in the same transaction scans the table under the ADD's ACCESS EXCLUSIVE
lock (not even reads). Both go in an `online()` block instead: it commits
what ran before it, runs its statements one by one in autocommit
(CREATE INDEX CONCURRENTLY; VALIDATE, which then takes SHARE UPDATE
EXCLUSIVE and lets writes through), then opens a new transaction.

What that costs: a revision with a block is not all-or-nothing. The
revisions before it are committed, stamped; a failure in or after the block
leaves the database at the revision before, with part of this one done. So
everything a revision does up to its last block must be safe to run again
(IF NOT EXISTS, and an index a failed build left invalid is dropped and
built again): the next `outbox db upgrade` resumes.

`SET LOCAL search_path` (env.py) does not survive the commit, and a
statement in autocommit has none: names in a block are schema-qualified,
and the transaction after it gets the search_path again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import context, op

from outbox.database import configured_schema

_INVALID_INDEX = """
SELECT NOT i.indisvalid
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :schema AND c.relname = :name
"""


def our_schema() -> str:
    """The schema this upgrade runs in, as env.py chose it."""
    return str(context.config.attributes.get("schema") or configured_schema())


@contextmanager
def online() -> Iterator[str]:
    """Autocommit for the block (it gets our schema's name); afterwards a
    new transaction with our search_path."""
    schema = our_schema()
    with op.get_context().autocommit_block():
        yield schema
    op.execute(f"SET LOCAL search_path TO {schema}")


def create_index_online(schema: str, name: str, table: str, columns: Sequence[str | sa.TextClause],
                        *, where: str | None = None) -> None:
    """CREATE INDEX CONCURRENTLY IF NOT EXISTS, in an `online()` block. A
    build that failed half-way leaves an invalid index of that name, which
    IF NOT EXISTS would keep: it is dropped first."""
    if not op.get_context().as_sql:
        invalid = op.get_bind().execute(sa.text(_INVALID_INDEX),
                                        {"schema": schema, "name": name}).scalar()
        if invalid:
            op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema}.{name}")
    op.create_index(name, table, list(columns), schema=schema, if_not_exists=True,
                    postgresql_concurrently=True, postgresql_where=where)
