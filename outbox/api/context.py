"""What every route needs: settings, the database engine, a transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from fastapi import Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from outbox.api.limits import KeyRateLimiter, LoginLimits, WorkspaceQueueCap
from outbox.settings import Settings


@dataclass(slots=True)
class AppContext:
    settings: Settings
    database_url: str = field(repr=False)  # has the password
    engine: Engine
    rate_limiter: KeyRateLimiter = field(init=False)
    queue_cap: WorkspaceQueueCap = field(init=False)
    login_limits: LoginLimits = field(init=False)

    def __post_init__(self) -> None:
        self.rate_limiter = KeyRateLimiter(self.settings.api_rate_limit_per_second,
                                           self.settings.api_rate_limit_burst)
        self.queue_cap = WorkspaceQueueCap(self.settings.max_queued_per_workspace)
        self.login_limits = LoginLimits()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in a transaction that commits when the block succeeds."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session


def context(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.outbox
    return ctx
