"""Separate dispatcher processes on one queue: concurrency, SIGKILL, SIGTERM, NOTIFY."""

from __future__ import annotations

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
