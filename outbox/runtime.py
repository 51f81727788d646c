"""Build the dispatcher's parts from settings: one place, used by the daemon,
cron mode, the HTTP cron endpoint, the demo and the benchmark."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import database_url, make_async_engine
from outbox.credentials import CredentialCache
from outbox.dispatcher import Dispatcher, DispatcherConfig, Observer
from outbox.settings import Settings
from providers.whapi import WhapiClient


@dataclass(slots=True)
class Runtime:
    settings: Settings
    engine: AsyncEngine
    provider: WhapiClient
    credentials: CredentialCache

    def dispatcher(self, *, observers: list[Observer] | None = None) -> Dispatcher:
        return Dispatcher(self.engine, self.provider, self.credentials,
                          DispatcherConfig.from_settings(self.settings), observers=observers)


@asynccontextmanager
async def open_runtime(settings: Settings, *, url: str | None = None) -> AsyncIterator[Runtime]:
    key = settings.require_encryption_key()
    old = settings.encryption_key_old.get_secret_value() if settings.encryption_key_old else ""
    engine = make_async_engine(url or database_url(settings), pool_size=settings.db_pool_size)
    provider = WhapiClient(timeout=settings.whapi_timeout_seconds,
                           max_in_flight=settings.concurrency)
    credentials = CredentialCache(engine, default_base_url=settings.whapi_base_url,
                                  keys=[key, old])
    try:
        yield Runtime(settings, engine, provider, credentials)
    finally:
        await provider.aclose()
        await engine.dispose()
