"""`outbox run`: the dispatcher daemon.

APScheduler (AsyncIOScheduler) drives everything:
* the dispatch tick, about once a second, never overlapping itself
  (max_instances=1). A tick drains what is due, so under load it simply
  keeps going; when idle, the next tick or a NOTIFY starts the next round;
* a NOTIFY on `outbox_enqueued` (LISTEN on a dedicated connection, never
  the pool's: DESIGN.md "Pitfalls") wakes the running tick, or runs the
  next tick at once. Behind a transaction-mode pooler LISTEN can't work
  (the pooler hands the session's server connection to others after each
  statement), so it runs on OUTBOX_LISTEN_DATABASE_URL, a direct connection,
  or not at all: then the tick's polling is what wakes us;
* maintenance (outbox/maintenance/: rescuer, unpauser, the pruners, analyzer,
  and the status callbacks' sender): each
  service says how often it runs and under which advisory lock, and runs
  its own pass (`run_once`); the daemon only schedules them.

SIGTERM/SIGINT: stop claiming, release what has not been sent, let sends on
the wire finish (within the lease), record them, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from datetime import datetime, timedelta
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from outbox.database import listen_forever, listen_url
from outbox.db.direct import DirectConnection
from outbox.dispatch.dispatcher import Dispatcher, Observer, Summary
from outbox.dispatch.runtime import Runtime, open_runtime, tune_gc
from outbox.events.callbacks import STOP_GRACE_SECONDS, CallbackSender
from outbox.heartbeat import HEARTBEAT_INTERVAL_SECONDS, beat
from outbox.maintenance.analyzer import Analyzer
from outbox.maintenance.delivery_pruner import DeliveryPruner
from outbox.maintenance.event_pruner import EventPruner
from outbox.maintenance.pruner import Pruner
from outbox.maintenance.rescuer import Rescuer
from outbox.maintenance.service import MaintenanceService
from outbox.maintenance.unpauser import Unpauser
from outbox.metrics import count_callback, instrumented_dispatcher, serve_metrics
from outbox.settings import Settings

NOTIFY_CHANNEL = "outbox_enqueued"

log = structlog.get_logger(__name__)


class Daemon:
    def __init__(self, runtime: Runtime, *, observers: list[Observer] | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        # Timed sends and counted outcomes (outbox.metrics); cheap when nobody scrapes.
        self.dispatcher: Dispatcher = instrumented_dispatcher(runtime, observers=observers)
        # One connection for the maintenance services: their passes take
        # turns on it (a transaction is one turn). The callback sender has
        # its own: an analyzer's VACUUM of a big table can hold this one for
        # minutes, and claimed callbacks must not wait out their lease.
        self._maintenance = DirectConnection.to(runtime.target,
                                                application_name="outbox-maintenance")
        self.stop = asyncio.Event()
        self._tick_running = False
        self._tick_idle = asyncio.Event()
        self._tick_idle.set()
        self._maintaining: set[asyncio.Task[Any]] = set()  # maintenance passes under way
        self.scheduler = AsyncIOScheduler(job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 30})
        # Under load a tick drains for a long time, so "skipped: maximum
        # number of running instances reached" is the design working, once a
        # second: not worth a warning.
        logging.getLogger("apscheduler.scheduler").addFilter(_SkippedTickFilter())

    async def run(self) -> Summary:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.request_stop)
        s = self.settings
        # First: a bad OUTBOX_LISTEN_DATABASE_URL stops us before any work.
        url = listen_url(s, self.runtime.target.conninfo)
        self.scheduler.add_job(self._tick, "interval", seconds=s.poll_interval_seconds,
                               id="dispatch", next_run_time=datetime.now())
        if s.heartbeat_file is not None:
            self.scheduler.add_job(self._heartbeat, "interval", id="heartbeat",
                                   seconds=HEARTBEAT_INTERVAL_SECONDS, next_run_time=datetime.now())
        services = maintenance_services(s)
        for service in services:
            self.scheduler.add_job(
                self._maintain, "interval", args=[service], id=service.name,
                seconds=service.interval_seconds,
                next_run_time=datetime.now() + timedelta(seconds=service.first_run_after_seconds))
        listener = asyncio.create_task(listen_forever(
            url, NOTIFY_CHANNEL, self._wake, application_name="outbox-listen",
            log_prefix="listen"), name="outbox-listen") if url else None
        if url is None:
            log.info("wakeups_by_polling", poll_interval_seconds=s.poll_interval_seconds,
                     reason="OUTBOX_DB_POOLER=transaction: LISTEN can't work through a "
                     "transaction pooler; set OUTBOX_LISTEN_DATABASE_URL to a direct "
                     "connection to be woken by NOTIFY")
        elif s.listen_database_url:
            log.info("wakeups_by_notify", via="OUTBOX_LISTEN_DATABASE_URL")
        self.scheduler.start()
        log.info("daemon_started", concurrency=s.concurrency, batch_size=s.batch_size,
                 lease_seconds=s.lease_seconds)
        try:
            await self.stop.wait()
        finally:
            # No new runs, but don't shut down yet: APScheduler's shutdown
            # cancels running coroutine jobs, and the running tick must finish
            # its graceful stop (release unsent rows, record the ones on the
            # wire).
            self.scheduler.pause()
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener
            await self._tick_idle.wait()
            # A callback pass hands back what it claimed and never posted,
            # and records the answers that come soon; the shutdown cancels
            # whatever else still runs.
            senders = [s for s in services if isinstance(s, CallbackSender)]
            for sender in senders:
                sender.request_stop()
            if self._maintaining:
                await asyncio.wait(self._maintaining, timeout=STOP_GRACE_SECONDS + 1)
            self.scheduler.shutdown(wait=False)
            for sender in senders:
                await sender.aclose()
            await self._maintenance.aclose()
        summary = self.dispatcher.summary
        log.info("daemon_stopped", **summary.as_dict())
        return summary

    def request_stop(self) -> None:
        if not self.stop.is_set():
            log.info("daemon_stopping")
            self.stop.set()

    async def _tick(self) -> None:
        if self.stop.is_set():
            return
        self._tick_running = True
        self._tick_idle.clear()
        try:
            # A NOTIFY that comes while a drain is finishing (after its last
            # claim, flushing completions) is only a set flag: drain again, or
            # that message would wait for the next poll.
            while True:
                await self.dispatcher.drain(stop=self.stop)
                if self.stop.is_set() or not self.dispatcher.woken:
                    break
        except Exception:
            log.exception("dispatch_tick_failed")
        finally:
            self._tick_running = False
            self._tick_idle.set()

    def _wake(self) -> None:
        if self._tick_running:
            self.dispatcher.wake()
            return
        job = self.scheduler.get_job("dispatch")
        if job is not None:
            job.modify(next_run_time=datetime.now())

    async def _heartbeat(self) -> None:
        # A coroutine, so it runs on the event loop (a plain function would
        # run in APScheduler's thread pool and beat while the loop is stuck).
        assert self.settings.heartbeat_file is not None
        beat(self.settings.heartbeat_file)

    async def _maintain(self, service: MaintenanceService) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._maintaining.add(task)
        database = (self.runtime.target if isinstance(service, CallbackSender)
                    else self._maintenance)
        try:
            await service.run_once(database)
        except Exception as exc:
            log.warning("maintenance_failed", job=service.name, error=type(exc).__name__)
        finally:
            self._maintaining.discard(task)

def maintenance_services(settings: Settings) -> list[MaintenanceService]:
    """What the daemon keeps up besides dispatching (outbox/maintenance/)."""
    return [Rescuer(), Unpauser(), Pruner(older_than_seconds=settings.prune_sent_after_seconds),
            Analyzer(),
            EventPruner(older_than_seconds=settings.events_retention.total_seconds()),
            DeliveryPruner(older_than_seconds=settings.events_retention.total_seconds()),
            CallbackSender.from_settings(settings, observer=count_callback)]


class _SkippedTickFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


async def run_daemon(settings: Settings) -> Summary:
    tune_gc()
    async with open_runtime(settings) as runtime:
        metrics = serve_metrics(settings)
        try:
            return await Daemon(runtime).run()
        finally:
            if metrics is not None:
                metrics.close()
