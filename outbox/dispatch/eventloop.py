"""The event loop a dispatcher process runs on: uvloop when installed (it
comes with uvicorn[standard]), else asyncio's own.

uvloop's loop runs callbacks and socket I/O in C: the same sends cost the
dispatcher less CPU (measured in `scripts/bench --only peers`)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)`, on uvloop when it is importable."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
