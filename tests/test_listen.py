"""The LISTEN loop the dispatcher daemon and the event hub share
(outbox.database.listen_forever): a NOTIFY wakes it; its connection killed
by the server, it comes back with backoff, says so, and wakes once on
reconnecting (a NOTIFY may have come meanwhile)."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import Engine, text
from structlog.testing import capture_logs

from outbox.database import listen_forever
from outbox.db.conninfo import libpq_url

APP = "outbox-test-listen"
NOTIFY = "SELECT count(*) FROM pg_notify('outbox_test_channel', '')"


async def test_notify_wakes_and_a_lost_connection_comes_back(clean_db: Engine,
                                                            database_url: str) -> None:
    wakes = asyncio.Event()
    count = 0

    def woken() -> None:
        nonlocal count
        count += 1
        wakes.set()

    async def next_wake() -> None:
        await asyncio.wait_for(wakes.wait(), 10)
        wakes.clear()

    def sql(statement: str) -> int:
        with clean_db.begin() as conn:
            return int(conn.execute(text(statement), {"app": APP}).scalar_one())

    with capture_logs() as logs:
        task = asyncio.create_task(listen_forever(
            libpq_url(database_url), "outbox_test_channel", woken, application_name=APP,
            log_prefix="test_listen"))
        try:
            await next_wake()  # connected: one wake, for what may have come before
            await asyncio.to_thread(sql, NOTIFY)
            await next_wake()
            assert count == 2
            killed = await asyncio.to_thread(sql, "SELECT count(pg_terminate_backend(pid)) "
                                                  "FROM pg_stat_activity "
                                                  "WHERE application_name = :app "
                                                  "AND datname = current_database()")
            assert killed == 1
            await next_wake()  # back, and woken on reconnecting
            await asyncio.to_thread(sql, NOTIFY)
            await next_wake()
            assert count == 4
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    events = [e["event"] for e in logs]
    assert events.count("test_listen_lost") == 1 and events.count("test_listen_back") == 1
