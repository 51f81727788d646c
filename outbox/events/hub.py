"""The live stream's one reader per process, fanned out in memory.

However many SSE clients an `outbox serve` process holds, it has two
database connections for them: one that LISTENs on `outbox_events` (the
events table's trigger NOTIFYs on commit, migration 0010) and one that
reads what is new (LIVE_EVENTS), for every workspace someone follows, in
one statement per wake-up. Each event is encoded once, as its SSE frame,
and the same frame goes to every client that wants it.

A client joins in two steps (outbox/api/events.py): `subscribe` notes the
hub's cursor and starts collecting what the hub reads from then on; the
client reads its own history from the database (its `Last-Event-ID`) up
to at least that cursor, then follows the collected batches, skipping what
the history already gave. Nothing falls between the two: the history reads
up to a horizon at or past the cursor, and the hub's batches start at it.

Heartbeats come from here too: one pass over the clients about every
second puts a heartbeat in the queue of each one idle for
HEARTBEAT_SECONDS, instead of a timer per client around every frame.

A client that doesn't keep up (its backlog passes QUEUE_LIMIT batches) is
dropped; it reconnects with its Last-Event-ID and catches up from the
database. Without NOTIFY (a transaction pooler and no
OUTBOX_LISTEN_DATABASE_URL) the hub reads every POLL_SECONDS.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from outbox.database import listen_forever, listen_url
from outbox.db import event_queries as q
from outbox.db.conninfo import libpq_url
from outbox.db.direct import DatabaseError, DirectConnection
from outbox.db.driver_sql import driver_sql
from outbox.dispatch.backoff import OutageBackoff
from outbox.events.reader import Event, sse_frame
from outbox.settings import Settings

NOTIFY_CHANNEL = "outbox_events"
READ_LIMIT = 1000  # events per statement; a longer burst is read in pages
QUEUE_LIMIT = 2000  # batches a client may fall behind before it is dropped
POLL_SECONDS = 1.0  # without NOTIFY
SAFETY_POLL_SECONDS = 15.0  # with NOTIFY: in case one was lost (reconnects)
LATER_SECONDS = 0.02  # events committed above the horizon: read again this soon
MIN_READ_GAP_SECONDS = 0.005  # a burst of NOTIFYs is one read
READY_SECONDS = 10.0  # a client waits this long for a hub that can't read yet
HELD_BACK_WARNING_SECONDS = 10.0  # events waiting this long behind a transaction: say so
HEARTBEAT_SECONDS = 15.0  # a stream idle this long gets a comment (proxies keep it open)

_LIVE_EVENTS = driver_sql(q.LIVE_EVENTS)
_CURRENT_HORIZON = driver_sql(q.CURRENT_HORIZON)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """An event as the hub hands it out: encoded once, filtered per client."""

    id: int
    type: str
    chat_id: uuid.UUID | None
    frame: bytes  # encoded once, sent as is to every client that wants it


# What else a client's queue carries besides batches (compared by identity):
# time for a heartbeat comment; the stream must end (the client reconnects).
HEARTBEAT: list[LiveEvent] = []
DROPPED: list[LiveEvent] = []


@dataclass(eq=False, slots=True)
class Subscriber:
    workspace_id: str
    cursor: int  # the hub's cursor when it joined: batches cover what follows
    queue: asyncio.Queue[list[LiveEvent]] = field(default_factory=asyncio.Queue)
    dropped: bool = False
    # When it was last handed something: one clock for every client (the
    # hub's heartbeat pass), not a timer per client per frame.
    last_sent: float = field(default_factory=time.monotonic)


class EventHub:
    def __init__(self, db: DirectConnection, listen_url: str | None) -> None:
        self._db = db
        self._listen_url = listen_url
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._cursor: int | None = None
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        # Bumped when a workspace gets its first client: a read that was in
        # flight didn't ask for that workspace's events, so it must not move
        # the cursor past them (it is read again instead).
        self._generation = 0
        self._warned = False  # events_held_back said, events_released not yet

    @property
    def clients(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    async def start(self) -> None:
        from outbox.metrics import watch_event_hub

        self._loop = asyncio.get_running_loop()
        watch_event_hub(self)  # outbox_event_streams
        self._tasks.append(asyncio.create_task(self._read_loop(), name="events-read"))
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="events-heartbeat"))
        if self._listen_url:
            self._tasks.append(asyncio.create_task(listen_forever(
                self._listen_url, NOTIFY_CHANNEL, self.wake,
                application_name="outbox-events-listen", log_prefix="events_listen"),
                name="events-listen"))

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # asyncio.wait: a cancel of aclose() itself still ends it
            await asyncio.wait(self._tasks)
        await self._db.aclose()

    async def subscribe(self, workspace_id: str) -> Subscriber:
        """Start collecting the workspace's live events (see the module doc).
        Waits for the hub's first read (TimeoutError after READY_SECONDS)."""
        async with asyncio.timeout(READY_SECONDS):
            await self._ready.wait()
            if not self._subscribers:
                # An idle hub doesn't read, so its cursor is old: "from now"
                # must mean now, not a burst of what happened meanwhile.
                row = await self._db.fetchone(_CURRENT_HORIZON, {})
                assert row is not None and self._cursor is not None
                if not self._subscribers:  # still: a client that joined meanwhile reads on
                    self._cursor = max(self._cursor, int(row[0]) - 1)
        assert self._cursor is not None
        sub = Subscriber(workspace_id, self._cursor)
        if workspace_id not in self._subscribers:
            self._generation += 1
        self._subscribers.setdefault(workspace_id, set()).add(sub)
        self.wake()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self._subscribers.get(sub.workspace_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subscribers[sub.workspace_id]

    def wake(self) -> None:
        self._wake.set()

    def end_streams(self) -> None:
        """The server is stopping: every stream ends now (its client
        reconnects with Last-Event-ID), instead of holding the graceful
        shutdown for its whole grace period. Safe from a signal handler."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._end_all)

    def _end_all(self) -> None:
        for subs in list(self._subscribers.values()):
            for sub in list(subs):
                self._drop(sub)

    # --- the reader ---------------------------------------------------------------

    async def _read_loop(self) -> None:
        backoff = OutageBackoff()
        timeout = POLL_SECONDS if not self._listen_url else SAFETY_POLL_SECONDS
        later_wait = LATER_SECONDS
        held_since: float | None = None
        while True:
            try:
                if self._cursor is None:
                    row = await self._db.fetchone(_CURRENT_HORIZON, {})
                    assert row is not None
                    self._cursor = int(row[0]) - 1
                    self._ready.set()
                # Nobody listening: nothing to read (subscribe moves the cursor).
                later = await self._read() if self._subscribers else False
                if backoff.succeeded():
                    log.info("events_reader_back")
            except DatabaseError as exc:
                delay = backoff.failed()
                if backoff.failures == 1:
                    log.warning("events_reader_failed", error=type(exc).__name__,
                                retry_in_seconds=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            # A transaction holding the horizon may write no events (so no
            # NOTIFY comes when it ends): look again, less often the longer.
            later_wait = min(later_wait * 2, POLL_SECONDS) if later else LATER_SECONDS
            held_since = self._held_back(later, held_since)
            wait = later_wait if later else timeout
            # asyncio.timeout, not wait_for: on 3.11 wait_for drops a cancel
            # that meets a wake-up, and aclose() then waits for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(MIN_READ_GAP_SECONDS)

    def _held_back(self, later: bool, since: float | None) -> float | None:
        """A long write transaction in this database holds every stream
        back (db/event_queries.py): warn once when it has for a while, and
        say when it is over. Returns since when events have been waiting."""
        now = time.monotonic()
        if not later:
            if self._warned:
                log.info("events_released", held_seconds=round(now - (since or now), 1))
            self._warned = False
            return None
        since = since or now
        if not self._warned and now - since >= HELD_BACK_WARNING_SECONDS:
            self._warned = True
            log.warning("events_held_back", seconds=round(now - since, 1),
                        hint="a write transaction in this database has been open that "
                             "long (pg_stat_activity: backend_xid, xact_start)")
        return since

    async def _read(self) -> bool:
        """Read and hand out what is new; True if more waits above the horizon."""
        assert self._cursor is not None
        while True:
            workspaces = sorted(self._subscribers)
            generation = self._generation
            rows = await self._db.fetchall(_LIVE_EVENTS, {
                "after": self._cursor, "workspace_ids": workspaces, "limit": READ_LIMIT})
            if self._generation != generation:
                continue  # a workspace joined meanwhile: read again, for it too
            horizon, later = int(rows[0][0]), bool(rows[0][1])
            batches: dict[str, list[LiveEvent]] = {}
            last = self._cursor
            for r in rows:
                if r[3] is None:
                    continue
                event = _live(r)
                batches.setdefault(r[2], []).append(event)
                last = event.id
            self._hand_out(batches)
            if len(rows) >= READ_LIMIT and rows[-1][3] is not None:
                self._cursor = last
                continue
            self._cursor = max(last, horizon - 1)
            return later

    def _hand_out(self, batches: dict[str, list[LiveEvent]]) -> None:
        now = time.monotonic()
        for workspace_id, batch in batches.items():
            for sub in list(self._subscribers.get(workspace_id, ())):
                if sub.queue.qsize() >= QUEUE_LIMIT:
                    self._drop(sub)  # too far behind: it catches up from the database
                    continue
                sub.queue.put_nowait(batch)
                sub.last_sent = now

    def _drop(self, sub: Subscriber) -> None:
        sub.dropped = True
        self.unsubscribe(sub)
        sub.queue.put_nowait(DROPPED)  # wakes the stream, which ends

    async def _heartbeat_loop(self) -> None:
        """Every client idle for HEARTBEAT_SECONDS gets a heartbeat: one pass
        over the clients about every second."""
        while True:
            interval = HEARTBEAT_SECONDS
            await asyncio.sleep(min(1.0, interval / 4))
            now = time.monotonic()
            for subs in list(self._subscribers.values()):
                for sub in subs:
                    if now - sub.last_sent >= interval:
                        sub.last_sent = now
                        sub.queue.put_nowait(HEARTBEAT)

def open_hub(database_url: str, settings: Settings) -> EventHub:
    """The hub for an `outbox serve` process on `database_url` (its reads on
    a connection of their own; LISTEN as the dispatcher daemon does it)."""
    db = DirectConnection(libpq_url(database_url), application_name="outbox-events",
                          pooler=settings.db_pooler, schema=settings.db_schema)
    return EventHub(db, listen_url(settings, database_url))


def _live(r: Any) -> LiveEvent:
    # Columns: horizon, later, workspace_id, then Event's.
    event = Event(int(r[3]), r[4], r[5], r[6], r[7], r[8], r[9])
    return LiveEvent(event.id, event.type, event.chat_id,
                     sse_frame(event.id, event.type, event.as_json()).encode())
