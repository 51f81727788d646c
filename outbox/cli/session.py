"""The database session a command handler works in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from outbox.settings import Settings

if TYPE_CHECKING:  # SQLAlchemy loads when a command opens a session, not with the CLI
    from sqlalchemy.orm import Session


@contextlib.contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """A session in a transaction that commits on success (for command handlers)."""
    from outbox.database import database_url, make_engine
    from outbox.db.engine import session_factory

    engine = make_engine(database_url(settings), pool_size=2, pooler=settings.db_pooler)
    try:
        with session_factory(engine)() as session, session.begin():
            yield session
    finally:
        engine.dispose()
