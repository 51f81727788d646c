"""Separate dispatcher processes on one queue: concurrency, SIGKILL, SIGTERM, NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox import enqueue_text
from outbox.dispatch.daemon import NOTIFY_CHANNEL
from tests.dispatch_helpers import (
    REPO,
    cli,
    enqueue_spread,
    order_violations,
    outbox_counts,
    sent_by_body,
)

pytestmark = pytest.mark.slow  # dispatcher processes


def start_daemon(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "outbox", "run"], cwd=REPO, text=True,
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not reached in time")


def listening(engine: Engine) -> bool:
    """Whether a daemon's LISTEN connection is open on the test database."""
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query = :listen"), {"listen": f"LISTEN {NOTIFY_CHANNEL}"}).scalar_one())


@pytest.mark.parametrize("workers", [2, 4])
def test_concurrent_dispatchers_send_each_message_once_in_order(
        workers, make_channel, clean_db: Engine, sim, sim_url):
    channels = [make_channel(name=f"c{i}", base_url=sim_url) for i in range(3)]
    enqueue_spread(clean_db, channels, messages=1500, chats=60)
    sim.set_faults(latency_ms=2, latency_jitter_ms=3)
    env = {"OUTBOX_BATCH_SIZE": "50", "OUTBOX_PER_CHANNEL_CLAIM": "20"}
    procs = [subprocess.Popen([sys.executable, "-m", "outbox", "dispatch", "--once",
                               "--no-progress"], cwd=REPO, env={**os.environ, **env},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(workers)]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0] * workers, outs
    # One more pass sends anything a worker left because a sibling held the chat.
    final = cli("dispatch", "--once", "--no-progress", separate_process=True)
    assert final.returncode == 0
    by_body = sent_by_body(sim)
    if len(by_body) != 1500:  # say why: where the rest are, and what the workers said
        with clean_db.connect() as conn:
            left = conn.execute(text(
                "SELECT o.channel_id, o.status, o.attempts, o.last_error, ch.status AS ch_status, "
                "ch.pause_reason, count(*) FROM outbox.outbox_messages o JOIN outbox.channels ch "
                "ON ch.id = o.channel_id WHERE o.status <> 'sent' GROUP BY 1, 2, 3, 4, 5, 6"
            )).all()
        raise AssertionError(f"{len(by_body)} of 1500 sent; unsent: {left}; "
                             f"workers: {outs}; final pass: {final.stdout} {final.stderr}")
    assert max(len(v) for v in by_body.values()) == 1, "a message was sent twice"
    assert order_violations(sim.sent()) == 0
    assert outbox_counts(clean_db) == {"sent": 1500}
    assert sum(int(o[0].split("sent ")[1].split(",")[0]) for o in outs) >= 1


def test_sigkill_mid_batch_loses_nothing_and_duplicates_are_counted(
        make_channel, clean_db: Engine, sim, sim_url):
    channels = [make_channel(name=f"c{i}", base_url=sim_url) for i in range(2)]
    enqueue_spread(clean_db, channels, messages=600, chats=200)
    # Slow provider: many rows are on the wire when the worker dies.
    sim.set_faults(latency_ms=300)
    daemon = start_daemon({"OUTBOX_LEASE_SECONDS": "3", "OUTBOX_CONCURRENCY": "64"})
    try:
        wait_for(lambda: sim.stats().accepted >= 100)
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
    time.sleep(0.5)  # let requests already on the wire land in the simulator
    accepted_bodies = set(sent_by_body(sim))
    with clean_db.connect() as conn:
        in_flight = conn.execute(text(
            "SELECT m.body FROM outbox.outbox_messages o "
            "JOIN outbox.messages m ON m.id = o.message_id "
            "WHERE o.status = 'sending'")).scalars().all()
    assert in_flight, "the kill should catch rows in flight"
    # Rows the provider accepted but we never recorded: the only possible duplicates.
    accepted_unrecorded = sum(1 for b in in_flight if b in accepted_bodies)

    sim.clear_faults()
    # The lease runs out (moved into the past rather than waited out).
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.outbox_messages SET locked_until = "
                          "now() - interval '1 second' WHERE status = 'sending'"))
    result = cli("dispatch", "--once", "--no-progress", separate_process=True)
    assert result.returncode == 0, result.stderr
    by_body = sent_by_body(sim)
    duplicates = sum(len(v) - 1 for v in by_body.values())
    assert len(by_body) == 600, "a message was lost"
    assert outbox_counts(clean_db) == {"sent": 600}
    assert duplicates == accepted_unrecorded
    print(f"\nkilled with {len(in_flight)} rows in flight, {accepted_unrecorded} of them "
          f"already accepted by the provider -> {duplicates} duplicate sends")


def test_sigkill_spends_attempts_only_on_rows_whose_request_started(
        make_channel, clean_db: Engine, sim, sim_url, database_url: str):
    """The worker claims a batch ahead of its senders; killed, it must not
    spend the attempts of the rows still waiting for a send slot."""
    from outbox.maintenance.rescuer import Rescuer, RescueResult

    channels = [make_channel(name=f"c{i}", base_url=sim_url) for i in range(4)]
    enqueue_spread(clean_db, channels, messages=40, chats=40)
    sim.set_faults(hang=True, hang_after_send=True)  # recorded on arrival, never answered
    daemon = start_daemon({"OUTBOX_CONCURRENCY": "4", "OUTBOX_BATCH_SIZE": "8",
                           "OUTBOX_LEASE_SECONDS": "60"})
    try:
        wait_for(lambda: len(sim.sent()) == 4 and outbox_counts(clean_db).get("sending") == 8)
        time.sleep(0.3)  # nothing more goes out: the 4 slots are held
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
    started = set(sent_by_body(sim))
    assert len(started) == 4
    with clean_db.begin() as conn:  # the lease runs out
        conn.execute(text("UPDATE outbox.outbox_messages SET locked_until = now() - "
                          "interval '1 second' WHERE status = 'sending'"))

    rescued = asyncio.run(_rescue(Rescuer(), database_url))
    assert rescued == RescueResult(requeued=8, failed=0, refunded=4)

    with clean_db.connect() as conn:
        attempts = dict(conn.execute(text(
            "SELECT m.body, o.attempts FROM outbox.outbox_messages o "
            "JOIN outbox.messages m ON m.id = o.message_id WHERE o.last_error IS NOT NULL")).all())
    assert len(attempts) == 8
    assert {b: a for b, a in attempts.items() if b in started} == dict.fromkeys(started, 1)
    assert {a for b, a in attempts.items() if b not in started} == {0}


async def _rescue(rescuer, database_url: str):  # type: ignore[no-untyped-def]
    from outbox.database import make_async_engine

    engine = make_async_engine(database_url, pool_size=1)
    try:
        return await rescuer.run_once(engine)
    finally:
        await engine.dispose()


def test_sigterm_exits_cleanly_with_nothing_left_sending(
        make_channel, clean_db: Engine, sim, sim_url):
    channels = [make_channel(name=f"c{i}", base_url=sim_url) for i in range(2)]
    enqueue_spread(clean_db, channels, messages=2000, chats=400)
    sim.set_faults(latency_ms=200)
    daemon = start_daemon({"OUTBOX_LEASE_SECONDS": "30", "OUTBOX_CONCURRENCY": "64"})
    wait_for(lambda: sim.stats().accepted >= 50)
    daemon.send_signal(signal.SIGTERM)
    out, _ = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, out
    counts = outbox_counts(clean_db)
    assert "sending" not in counts, counts
    # Everything the provider accepted is recorded as sent; nothing is lost.
    assert counts.get("sent", 0) == sim.stats().accepted
    assert counts.get("sent", 0) + counts.get("queued", 0) == 2000
    assert "daemon_stopped" in out


def test_serve_exits_0_on_sigterm_after_finishing_the_request_in_flight(
        make_channel, clean_db: Engine, sim, sim_url, database_url: str):
    """Like the daemon: SIGTERM is a clean stop, not death by signal (-15)."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from tests.api_fixtures import CRON_SECRET
    from tests.sim_fixtures import unused_port

    channel = make_channel(base_url=sim_url)
    enqueue_spread(clean_db, [channel], messages=1, chats=1)
    sim.set_faults(latency_ms=2000)  # the cron call is slow: it waits for the send
    port = unused_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "outbox", "serve", "--port", str(port)], cwd=REPO, text=True,
        env={**os.environ, "OUTBOX_CRON_SECRET": CRON_SECRET},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=30, trust_env=False) as client:
            def up() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return client.get("/healthz").status_code == 200
                return False

            wait_for(up, timeout=30)
            with ThreadPoolExecutor(1) as pool:
                call = pool.submit(client.post, "/v1/cron/dispatch?budget=20",
                                   headers={"Authorization": f"Bearer {CRON_SECRET}"})
                wait_for(lambda: sim.stats().in_flight == 1, timeout=15, interval=0.02)
                server.send_signal(signal.SIGTERM)
                response = call.result(timeout=30)
        out, _ = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert response.status_code == 200 and response.json()["sent"] == 1, response.text
    assert server.returncode == 0, out
    assert outbox_counts(clean_db) == {"sent": 1}


def test_daemon_wakes_on_notify_not_on_poll(make_channel, clean_db: Engine, sim, sim_url):
    channel = make_channel(base_url=sim_url)
    # A poll interval far longer than the wait below: only NOTIFY can explain a fast send.
    daemon = start_daemon({"OUTBOX_POLL_INTERVAL_SECONDS": "60"})
    try:
        wait_for(lambda: listening(clean_db), timeout=30)
        # Its start-up drains (of an empty queue) end within milliseconds: a
        # message enqueued after them can only be sent at once by a NOTIFY.
        time.sleep(0.5)
        with Session(clean_db) as s, s.begin():
            enqueue_text(s, channel_id=channel, to="+15550100001", body="wake up")
        wait_for(lambda: sim.stats().accepted == 1, timeout=15)
    finally:
        daemon.send_signal(signal.SIGTERM)
        out, _ = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, out
    assert outbox_counts(clean_db) == {"sent": 1}
