"""Build the dispatcher's parts from settings: one place, used by the daemon,
cron mode, the HTTP cron endpoint, the demo and the benchmark."""

from __future__ import annotations

import gc
import weakref
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outbox.database import database_target
from outbox.db.conninfo import DatabaseTarget
from outbox.dispatch.credentials import CredentialCache
from outbox.dispatch.dispatcher import Dispatcher, DispatcherConfig, Observer
from outbox.providers.base import OutgoingMessage, Provider, SendResult
from outbox.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from outbox.providers.whapi import WhapiClient


class WhapiOnFirstSend:
    """The process's `WhapiClient`, made on the first send.

    A cron pass that finds nothing due never loads the HTTP stack (httpx,
    aiohttp and their SSL contexts: about a fifth of `dispatch --once`'s
    start). One attribute check per send after that."""

    def __init__(self, *, timeout: float, max_in_flight: int) -> None:
        self._timeout = timeout
        self._max_in_flight = max_in_flight
        self._client: WhapiClient | None = None

    @property
    def client(self) -> WhapiClient:
        if self._client is None:
            from outbox.providers.whapi import WhapiClient

            self._client = WhapiClient(timeout=self._timeout, max_in_flight=self._max_in_flight)
        return self._client

    def send(self, *, base_url: str, token: str,
             message: OutgoingMessage) -> Coroutine[Any, Any, SendResult]:
        # The client's own coroutine, not one wrapped around it: no extra
        # frame per send.
        return self.client.send(base_url=base_url, token=token, message=message)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


@dataclass(slots=True)
class Runtime:
    settings: Settings
    target: DatabaseTarget  # where the dispatch path's own connections go
    provider: WhapiOnFirstSend
    credentials: CredentialCache
    # Weak: a long-lived runtime (the cron endpoint's) makes a dispatcher
    # per call, closed by the caller; only those still open matter at exit.
    _dispatchers: weakref.WeakSet[Dispatcher] = field(default_factory=weakref.WeakSet)
    _engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        """A SQLAlchemy engine on the same database, made on first use: the
        dispatch path runs on direct connections (db/direct.py), and a cron
        pass that needs nothing else never imports SQLAlchemy."""
        if self._engine is None:
            from outbox.database import make_async_engine, normalize_url

            t = self.target
            self._engine = make_async_engine(normalize_url(t.conninfo),
                                             pool_size=self.settings.db_pool_size,
                                             pooler=t.pooler, schema=t.schema)
        return self._engine

    def dispatcher(self, *, provider: Provider | None = None,
                   observers: list[Observer] | None = None) -> Dispatcher:
        """A dispatcher on this runtime's parts (`provider` wraps or replaces
        the client); closed with the runtime if not before."""
        d = Dispatcher(self.target, provider or self.provider, self.credentials,
                       DispatcherConfig.from_settings(self.settings), observers=observers)
        self._dispatchers.add(d)
        return d


# Allocations between young-generation collections (CPython's default: 700).
GC_GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Collect cyclic garbage less often in a dispatcher process.

    Every send allocates hundreds of container objects (tasks, futures,
    aiohttp and httpx request/response objects), so with CPython's default
    thresholds the collector runs thousands of times in a drain of 20,000
    messages, a few of them full collections that each walk the whole heap
    (every imported module's objects too): a fifth of the run. At 20,000 a
    drain runs a tenth as many collections, and throughput rose by about a
    third (`scripts/bench dispatch`, runs alternated). Memory is unaffected:
    garbage waits for at most 20,000 allocations, and the peak RSS in
    `scripts/bench memory` stays flat. (`gc.freeze()` after startup, the
    other usual remedy, still spent about half of what it saved.)
    """
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


@asynccontextmanager
async def open_runtime(settings: Settings, *, url: str | None = None) -> AsyncIterator[Runtime]:
    key = settings.require_encryption_key()
    old = settings.encryption_key_old.get_secret_value() if settings.encryption_key_old else ""
    target = database_target(settings, url=url)
    provider = WhapiOnFirstSend(timeout=settings.whapi_timeout_seconds,
                                max_in_flight=settings.concurrency)
    credentials = CredentialCache(target, default_base_url=settings.whapi_base_url,
                                  keys=[key, old])
    runtime = Runtime(settings, target, provider, credentials)
    try:
        yield runtime
    finally:
        for d in list(runtime._dispatchers):
            await d.aclose()
        await provider.aclose()
        if runtime._engine is not None:
            await runtime._engine.dispose()
