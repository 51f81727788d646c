"""What every route needs: settings, the database engine, a transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from outbox.settings import Settings


@dataclass(slots=True)
class AppContext:
    settings: Settings
    database_url: str
    engine: Engine

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in a transaction that commits when the block succeeds."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session


def context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.outbox
    return ctx
