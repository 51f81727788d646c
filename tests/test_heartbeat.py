"""Liveness (the image's health check): `outbox run` and `outbox serve` beat
while their event loop turns, database or not; `outbox alive` says whether
the last beat is fresh."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.api_fixtures import wait_for
from tests.dispatch_helpers import REPO, cli
from tests.sim_fixtures import unused_port


def _alive(heartbeat: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("alive", *extra, env={"OUTBOX_HEARTBEAT_FILE": str(heartbeat)})


def test_alive_reads_the_heartbeat_age(tmp_path: Path) -> None:
    heartbeat = tmp_path / "outbox.alive"
    missing = _alive(heartbeat)
    assert missing.returncode == 1 and "no heartbeat" in missing.stderr

    heartbeat.touch()
    fresh = _alive(heartbeat)
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.startswith("alive")

    old = time.time() - 120
    os.utime(heartbeat, (old, old))
    stale = _alive(heartbeat)
    assert stale.returncode == 1 and "120s ago" in stale.stderr
    assert _alive(heartbeat, "--max-age", "300").returncode == 0


def test_alive_without_a_heartbeat_file_is_a_configuration_error() -> None:
    proc = cli("alive")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: OUTBOX_HEARTBEAT_FILE")


@pytest.mark.slow
@pytest.mark.parametrize("command", [["run"], ["serve", "--port", "0"]], ids=["run", "serve"])
def test_a_process_without_its_database_is_alive_and_a_stuck_one_is_not(
        command: list[str], tmp_path: Path) -> None:
    heartbeat = tmp_path / "outbox.alive"
    if command[0] == "serve":
        command = ["serve", "--port", str(unused_port())]
    nobody = f"postgresql://outbox:pw@127.0.0.1:{unused_port()}/outbox"  # no server there
    proc = subprocess.Popen([sys.executable, "-m", "outbox", *command], cwd=REPO, text=True,
                            env={**os.environ, "OUTBOX_DATABASE_URL": nobody,
                                 "OUTBOX_HEARTBEAT_FILE": str(heartbeat)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _alive(heartbeat).returncode == 0, timeout=30, interval=0.2)

        # Stuck (stopped): no more beats; once the last one is old, not alive.
        proc.send_signal(signal.SIGSTOP)
        old = time.time() - 120
        os.utime(heartbeat, (old, old))
        assert _alive(heartbeat).returncode == 1
        # Going again: the next beat (within 10 s) makes it alive again.
        proc.send_signal(signal.SIGCONT)
        wait_for(lambda: _alive(heartbeat).returncode == 0, timeout=20, interval=0.2)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
