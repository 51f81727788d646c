"""Fixtures for the HTTP service tests: the real app under uvicorn on a
loopback port (a background thread), API keys, row counts.

Registered for every test module by `pytest_plugins` in tests/conftest.py.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tests.conftest import TABLES, TEST_KEY

CRON_SECRET = "cron-secret-for-tests-" + "y" * 16
API_TABLES = ("api_keys", "webhook_status_backlog", "users", "sessions")
COUNTED = (*TABLES, *API_TABLES)


@contextmanager
def run_server(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 (a free port) in a thread."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None,
                                           lifespan="on", access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def app_settings(database_url: str, **overrides: Any) -> Any:
    from outbox.settings import Settings

    # Not rate limited: the input and fuzz tests send thousands of requests
    # with one key. tests/test_api_limits.py turns the limit on.
    values: dict[str, Any] = {"database_url": database_url, "encryption_key": TEST_KEY,
                              "cron_secret": CRON_SECRET, "db_pool_size": 4,
                              "public_url": "https://outbox.example.com",
                              "api_rate_limit_per_second": 0}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def live_url(database_url: str) -> Iterator[str]:
    """One real server for the run (the app with a cron secret set)."""
    from outbox.api import create_app

    with run_server(create_app(app_settings(database_url))) as url:
        yield url


@pytest.fixture
def api_db(clean_db: Engine) -> Engine:
    """clean_db, plus this service's own tables emptied."""
    from tests.conftest import truncate

    truncate(clean_db, API_TABLES)
    return clean_db


@pytest.fixture
def api(live_url: str, api_db: Engine) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_url, timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture
def api_key(api_db: Engine) -> Callable[..., str]:
    """Create a committed API key for a workspace; returns the key."""
    from outbox.admin.apikeys import create_api_key

    def _make(workspace: str = "default", scopes: str | None = None) -> str:
        with Session(api_db) as s, s.begin():
            if scopes is None:  # the default a key is created with (read, send)
                return create_api_key(s, workspace_id=workspace).key
            return create_api_key(s, workspace_id=workspace, scopes=scopes).key

    return _make


@pytest.fixture
def admin(api_key: Callable[..., str]) -> Callable[..., str]:
    """An API key with the admin scope, for a workspace."""
    return lambda workspace="default": api_key(workspace, "admin")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def row_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: int(conn.execute(text(f"SELECT count(*) FROM outbox.{t}")).scalar_one())
                for t in COUNTED}


def webhook_secret(engine: Engine, channel_id: object) -> str:
    """A channel's webhook secret in the clear (it is stored encrypted)."""
    from tests.dispatch_helpers import webhook_secrets

    return webhook_secrets(engine)[uuid.UUID(str(channel_id))]


def wait_for(predicate: Callable[[], Any], *, timeout: float = 15.0,
             interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy (returns it) or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {value!r})")
        time.sleep(interval)
