"""POST /v1/cron/dispatch keeps one runtime for the app's life.

The endpoint's HTTP behaviour (auth, budget, the summary) is in
tests/test_api.py; here, what a call costs: the engine, the Whapi client and
the decrypted tokens are built once, each call's dispatcher closes its
connections when the call ends, and shutdown closes the rest.
"""

from __future__ import annotations

import gc

import httpx
import pytest
from sqlalchemy import Engine, text

from tests.api_fixtures import CRON_SECRET, app_settings, run_server, wait_for
from tests.dispatch_helpers import enqueue_spread, outbox_counts

AUTH = {"Authorization": f"Bearer {CRON_SECRET}"}


def _dispatcher_backends(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'outbox-dispatcher' "
            "AND datname = current_database()")).scalar_one())


@pytest.mark.slow
def test_calls_share_one_runtime_and_leave_no_dispatcher_connection_open(
        database_url: str, make_channel, clean_db: Engine, sim_url: str) -> None:
    from outbox.api import create_app

    app = create_app(app_settings(database_url))
    channel = make_channel(base_url=sim_url)
    with run_server(app) as base, httpx.Client(base_url=base, timeout=60,
                                               trust_env=False) as client:
        assert app.state.cron_runtime._runtime is None  # nothing built before a call
        runtimes = []
        for _ in range(3):
            enqueue_spread(clean_db, [channel], messages=2, chats=2)
            r = client.post("/v1/cron/dispatch?budget=20", headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.json()["sent"] == 2  # each call's own summary
            runtimes.append(app.state.cron_runtime._runtime)
            # No dispatcher connection left open (the server ends the backend of
            # a closed connection a moment after the call returns).
            wait_for(lambda: _dispatcher_backends(clean_db) == 0, timeout=10)
        assert runtimes[0] is not None and all(rt is runtimes[0] for rt in runtimes)
        # The token was decrypted by the first call and is still cached.
        assert channel in runtimes[0].credentials.cached()
        gc.collect()  # the runtime tracks its dispatchers weakly
        assert len(runtimes[0]._dispatchers) == 0  # closed and gone
    assert outbox_counts(clean_db) == {"sent": 6}
    assert app.state.cron_runtime._runtime is None  # closed at shutdown


def test_an_app_without_an_encryption_key_starts_and_its_cron_call_says_why(
        database_url: str, clean_db: Engine) -> None:
    from outbox.api import create_app

    app = create_app(app_settings(database_url, encryption_key=None))
    with run_server(app) as base, httpx.Client(base_url=base, trust_env=False) as client:
        for _ in range(2):  # and keeps saying it: nothing half-built is kept
            r = client.post("/v1/cron/dispatch", headers=AUTH)
            assert r.json()["error"]["code"] == "missing_encryption_key", r.text
        assert client.get("/healthz").status_code == 200
