"""What the HTTP service exposes, and how it answers when it is full.

/docs and /redoc load their scripts from a CDN, so they are off unless
OUTBOX_API_DOCS asks for them; /openapi.json (no third-party assets) is
always served. With every pooled connection busy a request gets a 503 with
Retry-After, not a 500.
"""

from __future__ import annotations

import contextlib

import httpx
import pytest
from sqlalchemy import Engine

from tests.api_fixtures import app_settings, auth, run_server


def test_docs_pages_are_off_by_default_and_the_description_is_served(database_url: str) -> None:
    from outbox.api import create_app

    with run_server(create_app(app_settings(database_url))) as url:
        assert httpx.get(f"{url}/docs").status_code == 404
        assert httpx.get(f"{url}/redoc").status_code == 404
        spec = httpx.get(f"{url}/openapi.json")
        assert spec.status_code == 200 and "/v1/messages" in spec.json()["paths"]
    with run_server(create_app(app_settings(database_url, api_docs=True))) as url:
        page = httpx.get(f"{url}/docs")
        assert page.status_code == 200 and "swagger" in page.text.lower()


def test_a_full_connection_pool_is_a_503_with_retry_after(
        database_url: str, api_db: Engine, api_key) -> None:
    from outbox.api import create_app

    key = api_key()
    app = create_app(app_settings(database_url, db_pool_size=1, db_pool_timeout_seconds=0.2))
    engine = app.state.outbox.engine
    with run_server(app) as url, contextlib.ExitStack() as held:
        assert httpx.get(f"{url}/v1/chats", headers=auth(key)).status_code == 200
        for _ in range(2):  # the pool (1) and its overflow (1), all taken
            held.enter_context(engine.connect())
        busy = httpx.get(f"{url}/v1/chats", headers=auth(key))
        assert busy.status_code == 503, busy.text
        assert busy.headers["Retry-After"] == "1"
        assert busy.json()["error"]["code"] == "database_busy"
        held.close()
        assert httpx.get(f"{url}/v1/chats", headers=auth(key)).status_code == 200



def test_a_short_cron_secret_is_refused_in_one_line(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from outbox.errors import ConfigurationError
    from outbox.settings import load_settings
    from tests.dispatch_helpers import cli

    monkeypatch.setenv("OUTBOX_CRON_SECRET", "letmein")
    with pytest.raises(ConfigurationError, match=r"OUTBOX_CRON_SECRET: .*at least 32"):
        load_settings()
    generated = cli("keys", "generate", env={"OUTBOX_CRON_SECRET": ""})
    assert generated.returncode == 0 and len(generated.stdout.strip()) == 44
    monkeypatch.setenv("OUTBOX_CRON_SECRET", generated.stdout.strip())
    assert load_settings().cron_secret is not None
