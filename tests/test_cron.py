"""POST /v1/cron/dispatch: a full pass, one at a time, on one runtime.

The endpoint's HTTP behaviour (auth, budget, the summary) is in
tests/test_api.py; here, that a call is a whole `dispatch --once` pass (it
rescues expired leases and lifts expired pauses, so cron alone keeps every
chat moving), that overlapping calls are refused, and what a call costs:
the engine, the Whapi client and the decrypted tokens are built once, each
call's dispatcher closes its connections when the call ends, and shutdown
closes the rest.
"""

from __future__ import annotations

import gc
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import Engine, text

from outbox.providers.simulator.control import SimulatorControl
from tests.api_fixtures import CRON_SECRET, app_settings, run_server, wait_for
from tests.dispatch_helpers import enqueue_spread, outbox_counts, sent_by_body

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
        for n in range(3):
            enqueue_spread(clean_db, [channel], messages=2, chats=2)
            r = client.post("/v1/cron/dispatch?budget=20", headers=AUTH)
            assert r.status_code == 200, r.text
            assert r.json()["sent"] == 2  # each call's own summary
            runtimes.append(app.state.cron_runtime._runtime)
            # (a backend leaves pg_stat_activity just after its client hangs up)
            assert wait_for(lambda: _dispatcher_backends(clean_db) == 0, timeout=15), (
                f"call {n} left connections open")
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


def _leave_sending_with_expired_lease(engine: Engine, channel: uuid.UUID) -> None:
    """What a worker killed mid-send leaves: its claim, lease run out."""
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE outbox.outbox_messages SET status = 'sending', attempts = 1, "
            "claim_token = gen_random_uuid(), locked_until = now() - interval '1 second' "
            "WHERE channel_id = :c"), {"c": channel})


def _pause_until_past(engine: Engine, channel: uuid.UUID) -> None:
    with engine.begin() as conn:
        conn.execute(text(
            "UPDATE outbox.channels SET status = 'paused', pause_reason = 'rate limited', "
            "pause_cause = 'rate_limit', paused_until = now() - interval '1 second' "
            "WHERE id = :c"), {"c": channel})


def test_a_call_rescues_expired_leases_and_lifts_expired_pauses_before_it_drains(
        database_url: str, make_channel, clean_db: Engine, sim_url: str) -> None:
    from outbox.api import create_app

    killed = make_channel(name="killed", phone="+15550000001", base_url=sim_url)
    paused = make_channel(name="paused", phone="+15550000002", base_url=sim_url)
    enqueue_spread(clean_db, [killed], messages=2, chats=1)  # one chat: the 2nd waits
    _leave_sending_with_expired_lease(clean_db, killed)
    with clean_db.begin() as conn:  # only the chat's head was on the wire
        conn.execute(text("UPDATE outbox.outbox_messages SET status = 'queued', attempts = 0, "
                          "claim_token = NULL, locked_until = NULL WHERE id = "
                          "(SELECT max(id) FROM outbox.outbox_messages)"))
    enqueue_spread(clean_db, [paused], messages=1, chats=1)
    _pause_until_past(clean_db, paused)

    app = create_app(app_settings(database_url))
    with run_server(app) as base, httpx.Client(base_url=base, timeout=60,
                                               trust_env=False) as client:
        r = client.post("/v1/cron/dispatch?budget=20", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["sent"] == 3
    assert outbox_counts(clean_db) == {"sent": 3}
    with clean_db.connect() as conn:
        status = conn.execute(text(
            "SELECT status, paused_until, pause_reason FROM outbox.channels WHERE id = :c"),
            {"c": paused}).one()
    assert tuple(status) == ("active", None, None)


@pytest.mark.slow  # over a second
def test_overlapping_calls_one_runs_the_other_is_refused_with_409(
        database_url: str, make_channel, clean_db: Engine, sim_url: str,
        sim: SimulatorControl) -> None:
    from outbox.api import create_app

    channel = make_channel(base_url=sim_url)
    enqueue_spread(clean_db, [channel], messages=20, chats=20)
    sim.set_faults(latency_ms=1500)  # the first pass is still sending when the second comes
    app = create_app(app_settings(database_url))
    with run_server(app) as base, httpx.Client(base_url=base, timeout=60,
                                               trust_env=False) as client:
        with ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(client.post, "/v1/cron/dispatch?budget=20", headers=AUTH)
                     for _ in range(2)]
            answers = sorted((c.result() for c in calls), key=lambda r: r.status_code)
        ok, busy = answers
        assert (ok.status_code, busy.status_code) == (200, 409), (ok.text, busy.text)
        assert busy.json()["error"]["code"] == "cron_busy"
        assert ok.json()["sent"] == 20
        # The lock goes with the pass: the next call runs.
        again = client.post("/v1/cron/dispatch?budget=20", headers=AUTH)
        assert again.status_code == 200 and again.json()["sent"] == 0, again.text
    assert outbox_counts(clean_db) == {"sent": 20}
    assert all(len(records) == 1 for records in sent_by_body(sim).values())
    assert len(sent_by_body(sim)) == 20
