"""Liveness: a long-running process proves its event loop turns by touching
a file (OUTBOX_HEARTBEAT_FILE); `outbox alive` checks the file is fresh.

This is what a container's health check or a liveness probe should ask:
whether the process works, not whether the database is up. A restart
doesn't bring a database back, and a health check that asks the database
turns its outage into every container restarting at once. A process whose
event loop is stuck (or that is gone) stops touching the file; one waiting
out a database outage goes on touching it.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import structlog

HEARTBEAT_INTERVAL_SECONDS = 10.0
DEFAULT_MAX_AGE_SECONDS = 60.0  # six missed beats

log = structlog.get_logger(__name__)


def beat(path: Path) -> None:
    """Touch `path` (create it if needed)."""
    try:
        path.touch()
        os.utime(path)
    except OSError as exc:  # a full or read-only disk must not stop the work
        log.warning("heartbeat_failed", path=str(path), error=type(exc).__name__)


async def beat_forever(path: Path, interval_seconds: float = HEARTBEAT_INTERVAL_SECONDS) -> None:
    """Touch `path` every `interval_seconds`, on the running event loop, until cancelled."""
    while True:
        beat(path)
        await asyncio.sleep(interval_seconds)


def age_seconds(path: Path) -> float | None:
    """Seconds since the last beat (None: no beat yet)."""
    try:
        return max(0.0, time.time() - path.stat().st_mtime)
    except FileNotFoundError:
        return None
