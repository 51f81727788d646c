"""Benchmark whapi-outbox (issue 5): `scripts/bench [--quick] [--only NAME[,NAME]]`.

Sets up like scripts/test: PostgreSQL from OUTBOX_DATABASE_URL (a database
`<name>_bench_<pid>` is created next to it) or the embedded server in
./.outbox (database `outbox_bench_<pid>`); the database is made fresh,
migrated, and dropped at the end. The Whapi simulator runs on loopback.

Scenarios (all by default, in this order):
  ceiling   the dispatcher's HTTP client (WhapiClient) against the simulator,
            no database: requests/s at Settings().concurrency in flight
  dispatch  N queued texts over 20 channels and 2,000 chats, one
            `outbox dispatch --once` process drains them: messages/s and
            dispatch / ceiling (ceiling measured in the same run)
  latency   simulator latency 200 ms, in-flight limit L = 256: steady
            throughput / (L / 0.2 s), for the client alone and the dispatcher
  enqueue   enqueue_text: single-message transactions/s, each committed, from
            4 concurrent callers (threads, a pooled Session per transaction),
            and from 1 caller (transactions back to back);
            enqueue_many: messages/s in batches of 1,000 per transaction
  scale     1, 2 and 4 dispatcher processes on one queue: messages/s and
            duplicates (bodies the simulator accepted more than once)
  backlog   CLAIM latency p50/p99 (batch 200, rolled back) with an almost
            empty table vs. 1M queued + 5M sent rows: the ratio; sizes
  memory    peak RSS of the dispatcher process draining the small queue vs.
            draining with the big backlog present
  statements  CLAIM and COMPLETE alone on one connection, no HTTP: per
            message wall time, client CPU and PostgreSQL CPU, prepared or
            not, generic plans, pipeline mode, batch sizes
            (scripts/bench_statements.py)
  inbox     100,000 chats and a chat of 10,000 messages: p50/p99 of the
            chat list (first page, half-way down, name and number search,
            one agent's) and the thread (latest, half-way back), with each
            statement's plan (scripts/bench_inbox.py)
  console   the web console's page views on the inbox data (the page and
            the API calls its script makes, over loopback, as a signed-in
            admin): p50/p95 of the inbox and of a 10,000-message thread;
            target p95 <= 100 ms (scripts/bench_console.py)
  peers     side by side against a minimal fake API (uvicorn, raw ASGI), one
            channel, N messages to distinct recipients, at 0 ms with 64 in
            flight and at 200 ms with 256: raw aiohttp (the ceiling),
            PgQueuer in drain mode, our client alone, and `outbox dispatch
            --once` timed from process start; plus an empty-queue
            `dispatch --once` (process start). Needs the `bench` extra.
            --n sets N (scripts/bench_peers.py)
  pacing    the dispatch drain with limits that never bind vs. none,
            alternated in one run: limits / none (scripts/bench_pacing.py)
  headofline  CLAIM p50/p99 with normal traffic, then with one chat of
            100,000 queued rows behind a `sending` row next to it: the ratio
  events    1,000 SSE clients on one `outbox serve`: p50/p99 from an enqueue's
            COMMIT to each client's frame, the serve process's RSS; status
            callbacks/s to a loopback receiver that checks every signature
            (scripts/bench_events.py)

Only when named (--only soak), it takes --minutes (default 10):
  soak      sustained mixed load on the real processes (outbox serve taking
            40 API requests/s, enqueue_many 200 every 5 s, one outbox run
            daemon; provider 150-250 ms with 2% 503s): enqueue-to-sent p50/p99
            per minute, lost and duplicated messages (scripts/bench_soak.py);
            --soak-without-analyzer keeps the daemon's analyzer from running

Rates are over the simulator's window (first to last accepted request) so
process start-up is not counted; the dispatcher's own drain time (from its
--json summary, includes token decryption) is reported beside it. Every
comparison is a ratio of two figures from the same run: the machine is
shared and absolute numbers drift.

Prints one JSON object per scenario (one line each), then a table.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
from bench_console import measure as measure_console  # noqa: E402
from bench_data import load_backlog, plan_summary, table_sizes  # noqa: E402
from bench_events import measure_events  # noqa: E402
from bench_inbox import load as load_inbox  # noqa: E402
from bench_inbox import measure as measure_inbox  # noqa: E402
from bench_pacing import head_of_line, pacing  # noqa: E402
from bench_soak import soak as run_soak  # noqa: E402
from bench_soak import summary as soak_summary  # noqa: E402
from bench_statements import measure as measure_statements  # noqa: E402
from sqlalchemy import Engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from outbox.admin.channels import create_channel  # noqa: E402
from outbox.database import make_engine, normalize_url  # noqa: E402
from outbox.db import queries  # noqa: E402
from outbox.db.admin import create_database, drop_database  # noqa: E402
from outbox.db.conninfo import libpq_url  # noqa: E402
from outbox.enqueue import enqueue_many, enqueue_text  # noqa: E402
from outbox.message_types import TextMessage  # noqa: E402
from outbox.providers.simulator.control import SimulatorControl, start_simulator  # noqa: E402
from outbox.settings import Settings  # noqa: E402

BENCH_KEY = base64.urlsafe_b64encode(hashlib.sha256(b"whapi-outbox bench").digest()).decode()
SCENARIOS = ("ceiling", "dispatch", "latency", "enqueue", "scale", "backlog", "memory",
             "statements", "inbox", "console", "events", "pacing", "headofline", "peers")
ONLY_WHEN_NAMED = ("soak",)  # minutes long: not part of a default run
QUEUE_TABLES = "outbox.outbox_messages, outbox.messages, outbox.chats, outbox.contacts"

TARGETS = {
    "dispatch_over_ceiling": 0.7,
    "latency_efficiency": 0.9,
    "enqueue_many_msgs_per_s": 20_000,
    "enqueue_single_tx_per_s": 1_000,
    "backlog_claim_ratio": 2.0,
    "peak_rss_mb": 200,
    "peers_over_pgqueuer_0ms": 1.3,
    "peers_over_raw_200ms": 0.95,
    "empty_dispatch_wall_s": 0.25,
    "client_over_raw_64": 0.85,
    "events_p99_ms": 250,
    "events_serve_rss_mb": 300,
    "callbacks_per_s": 1_000,
}


@dataclass(frozen=True)
class Sizes:
    channels: int = 20
    chats: int = 2_000
    ceiling_requests: int = 20_000
    dispatch_messages: int = 20_000
    latency_messages: int = 10_000
    latency_ms: float = 200.0
    latency_limit: int = 256
    latency_low_limit: int = 64  # a second point, well below the CPU ceiling
    enqueue_single: int = 5_000
    enqueue_callers: int = 4
    enqueue_many_messages: int = 100_000
    enqueue_batch: int = 1_000
    scale_messages: int = 20_000
    scale_processes: tuple[int, ...] = (1, 2, 4)
    backlog_small_queued: int = 2_000
    backlog_queued: int = 1_000_000
    backlog_sent: int = 5_000_000
    backlog_chats: int = 100_000
    claim_batch: int = 200
    claim_samples: int = 200
    memory_drain: int = 20_000
    statements_messages: int = 20_000
    statements_rounds: int = 3
    inbox_chats: int = 100_000
    inbox_thread: int = 10_000
    inbox_samples: int = 200
    soak_minutes: float = 10.0
    soak_without_analyzer: bool = False
    peers_messages: int = 20_000
    # (provider latency in ms, in flight)
    peers_shapes: tuple[tuple[float, int], ...] = ((0.0, 64), (200.0, 256))
    peers_empty_runs: int = 5
    pacing_rounds: int = 3
    hol_huge_chat: int = 100_000
    hol_traffic: int = 2_000
    events_clients: int = 1_000
    events_transactions: int = 200
    events_rate: float = 20.0  # enqueue transactions per second
    events_callbacks: int = 20_000


FULL = Sizes()
QUICK = Sizes(
    ceiling_requests=4_000, dispatch_messages=2_000, latency_messages=3_000,
    enqueue_single=1_000, enqueue_many_messages=20_000, scale_messages=2_000,
    backlog_queued=50_000, backlog_sent=200_000, claim_samples=100, memory_drain=2_000,
    statements_messages=2_000, statements_rounds=1, inbox_samples=50, peers_messages=5_000,
    events_clients=1_000, events_transactions=60, events_callbacks=4_000,
)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- child processes -------------------------------------------------------------


class Child:
    """A subprocess whose peak RSS and CPU time we get exactly (wait4)."""

    def __init__(self, cmd: list[str], env: dict[str, str]) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._readers = [
            threading.Thread(target=lambda: self._out.append(self.proc.stdout.read()),  # type: ignore[union-attr]
                             daemon=True),
            threading.Thread(target=lambda: self._err.append(self.proc.stderr.read()),  # type: ignore[union-attr]
                             daemon=True),
        ]
        for r in self._readers:
            r.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float) -> dict[str, Any]:
        timer = threading.Timer(timeout, self.proc.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(self.proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - self.started
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        for r in self._readers:
            r.join()
        out = b"".join(self._out).decode(errors="replace")
        err = b"".join(self._err).decode(errors="replace")
        if self.proc.returncode != 0:
            raise RuntimeError(f"{' '.join(self.proc.args)} exited with "  # type: ignore[arg-type]
                               f"{self.proc.returncode}:\n{err[-3000:]}\n{out[-1000:]}")
        return {
            "wall_s": round(wall, 3),
            "peak_rss_mb": round(ru.ru_maxrss / 1024, 1),  # Linux: KiB
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "stdout": out,
            "stderr": err,
        }


class CpuMonitor:
    """CPU seconds spent by the simulator and by this database's PostgreSQL
    backends during a run, and how busy the whole machine was (the rest is
    other work on a shared machine). Polls /proc; Linux only."""

    def __init__(self, bench: Bench) -> None:
        self._bench = bench
        self._stop = threading.Event()
        self._pg: dict[int, float] = {}
        self._sim0 = _proc_cpu(bench.sim.process.pid)
        self._machine0 = _machine_cpu()
        self._t0 = time.perf_counter()
        with psycopg.connect(bench.conninfo, autocommit=True) as conn:
            self._pg0 = {pid: _proc_cpu(pid) for pid in self._backends(conn)}
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _backends(self, conn: psycopg.Connection[Any]) -> list[int]:
        return [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()")]

    def _poll(self) -> None:
        with psycopg.connect(self._bench.conninfo, autocommit=True) as conn:
            while True:
                for pid in self._backends(conn):
                    self._pg[pid] = max(self._pg.get(pid, 0.0), _proc_cpu(pid))
                if self._stop.wait(0.2):
                    return

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self._t0
        busy0, total0 = self._machine0
        busy1, total1 = _machine_cpu()
        ncpu = len(os.sched_getaffinity(0))
        pg = sum(v - self._pg0.get(pid, 0.0) for pid, v in self._pg.items())
        return {
            "wall_s": round(wall, 2),
            "postgres_cpu_s": round(pg, 2),
            "simulator_cpu_s": round(_proc_cpu(self._bench.sim.process.pid) - self._sim0, 2),
            "machine_busy_cores": round(ncpu * (busy1 - busy0) / max(1e-9, total1 - total0), 2),
        }


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu() -> tuple[float, float]:
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return float(sum(parts) - idle), float(sum(parts))


# --- the bench -------------------------------------------------------------------------


class Bench:
    def __init__(self, sizes: Sizes, *, profile_dir: Path | None, keep_db: bool) -> None:
        self.s = sizes
        self.profile_dir = profile_dir
        self.keep_db = keep_db
        self.results: dict[str, dict[str, Any]] = {}
        self.channels: list[tuple[uuid.UUID, str]] = []
        self.backlog_loaded = False
        self._stack = contextlib.ExitStack()

    # -- setup ------------------------------------------------------------------------

    def __enter__(self) -> Bench:
        try:
            self._setup()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _setup(self) -> None:
        server = _server_url()
        base = make_url(server)
        prefix = base.database if os.environ.get("OUTBOX_DATABASE_URL") else "outbox"
        self.db_name = f"{prefix}_bench_{os.getpid()}"
        self.admin_url = libpq_url(server)
        _drop_stale_bench_databases(self.admin_url)
        self.url = create_database(server, self.db_name, replace=True)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            self.pg_version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        if not self.keep_db:
            self._stack.callback(drop_database, server, self.db_name)
        self.conninfo = libpq_url(self.url)
        say(f"bench database {self.db_name} (PostgreSQL {self.pg_version})")
        from outbox.migrate import upgrade

        upgrade(self.url)
        self.engine: Engine = make_engine(self.url, pool_size=2)
        self._stack.callback(self.engine.dispose)
        self.sim = self._stack.enter_context(start_simulator())
        self.ctl: SimulatorControl = self._stack.enter_context(self.sim.control())
        say(f"simulator at {self.sim.url} (pid {self.sim.process.pid})")
        with Session(self.engine) as s, s.begin():
            for i in range(self.s.channels):
                token = f"bench{i:02d}{secrets.token_hex(8)}"
                info = create_channel(s, name=f"bench-{i:02d}", phone_number=f"+1555000{i:04d}",
                                      token=token, encryption_key=BENCH_KEY,
                                      base_url=self.sim.url)
                self.channels.append((info.id, token))

    def dispatcher_env(self, **extra: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTBOX_")}
        env.update({
            "OUTBOX_DATABASE_URL": self.url,
            "OUTBOX_ENCRYPTION_KEY": BENCH_KEY,
            "OUTBOX_WHAPI_BASE_URL": self.sim.url,
            "OUTBOX_LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
        })
        env.update({f"OUTBOX_{k.upper()}": str(v) for k, v in extra.items()})
        return env

    # -- helpers ----------------------------------------------------------------------

    def reset_queue(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {QUEUE_TABLES} RESTART IDENTITY"))
            conn.execute(text("UPDATE outbox.channels SET status = 'active', paused_until = NULL, "
                              "pause_reason = NULL, rate_limit_strikes = 0"))
        self.backlog_loaded = False

    def fill_queue(self, n: int, tag: str) -> dict[str, Any]:
        """Empty the queue and enqueue n texts (enqueue_many, 1,000 per
        transaction) round-robin over the chats; chat k is on channel k % C."""
        self.reset_queue()
        started = time.perf_counter()
        batch = self.s.enqueue_batch
        for lo in range(0, n, batch):
            plan = [self._message(i, tag) for i in range(lo, min(n, lo + batch))]
            with Session(self.engine) as s, s.begin():
                enqueue_many(s, plan)
        seconds = time.perf_counter() - started
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE outbox.outbox_messages, outbox.messages, outbox.chats, "
                              "outbox.contacts"))
        return {"messages": n, "seconds": round(seconds, 3)}

    def _message(self, i: int, tag: str) -> TextMessage:
        chat = i % self.s.chats
        channel_id = self.channels[chat % len(self.channels)][0]
        return TextMessage(channel_id, f"+1555{3000000 + chat:07d}", f"{tag}-{i:07d}")

    def spawn_dispatcher(self, *args: str, **env: Any) -> Child:
        cmd = [sys.executable, "-m", "outbox", "dispatch", "--once", "--json", "--no-progress",
               *args]
        return Child(cmd, self.dispatcher_env(**env))

    def run_dispatchers(self, count: int, *args: str, timeout: float = 1800,
                        profile: str | None = None, **env: Any) -> list[dict[str, Any]]:
        monitor = CpuMonitor(self)
        children = [self.spawn_dispatcher(*args, **env) for _ in range(count)]
        spy = None
        if profile and self.profile_dir is not None:
            spy = _start_py_spy(children[0].pid, self.profile_dir / profile)
        out = []
        for c in children:
            r = c.wait(timeout)
            r["summary"] = json.loads(r.pop("stdout").strip().splitlines()[-1])
            r["stderr_tail"] = r.pop("stderr")[-500:]
            out.append(r)
        cpu = monitor.stop()
        if spy is not None:
            spy.wait(timeout=60)
        sent = sum(r["summary"]["sent"] for r in out) or 1
        cpu["dispatcher_cpu_s"] = round(sum(r["cpu_s"] for r in out), 2)
        cpu["per_message_ms"] = {
            "dispatcher": round(1000 * cpu["dispatcher_cpu_s"] / sent, 3),
            "postgres": round(1000 * cpu["postgres_cpu_s"] / sent, 3),
            "simulator": round(1000 * cpu["simulator_cpu_s"] / sent, 3),
        }
        cpu["other_busy_cores"] = round(max(0.0, cpu["machine_busy_cores"] - (
            cpu["dispatcher_cpu_s"] + cpu["postgres_cpu_s"] + cpu["simulator_cpu_s"])
            / cpu["wall_s"]), 2)
        for r in out:
            r["cpu"] = cpu
        return out

    def sim_report(self, expected: int | None = None) -> dict[str, Any]:
        """What the simulator accepted since its last reset: rates over its
        window, unique bodies, duplicates."""
        records = self.ctl.sent()
        stats = self.ctl.stats()
        bodies = Counter(str(r.body) for r in records)
        times = sorted(r.received_at for r in records)
        n = len(times)
        rep: dict[str, Any] = {
            "accepted": n,
            "unique_bodies": len(bodies),
            "duplicate_bodies": sum(1 for c in bodies.values() if c > 1),
            "extra_sends": sum(c - 1 for c in bodies.values() if c > 1),
            "rejected": stats.rejected_total,
            "sim_max_in_flight": stats.max_in_flight,
        }
        if n >= 2 and times[-1] > times[0]:
            rep["window_s"] = round(times[-1] - times[0], 3)
            rep["msgs_per_s"] = round((n - 1) / (times[-1] - times[0]), 1)
            i0, i1 = int(n * 0.1), int(n * 0.9)
            if i1 > i0 and times[i1] > times[i0]:
                rep["steady_msgs_per_s"] = round((i1 - i0) / (times[i1] - times[i0]), 1)
        if expected is not None:
            rep["all_arrived_once"] = (len(bodies) == expected and rep["extra_sends"] == 0)
        return rep

    def outbox_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {r[0]: int(r[1]) for r in conn.execute(text(
                "SELECT status, count(*) FROM outbox.outbox_messages GROUP BY status"))}

    def client_run(self, requests: int, concurrency: int, tag: str) -> dict[str, Any]:
        tokens = ",".join(t for _, t in self.channels)
        monitor = CpuMonitor(self)
        child = Child([sys.executable, str(REPO / "scripts" / "bench_client.py"),
                       "--url", self.sim.url, "--tokens", tokens, "--requests", str(requests),
                       "--concurrency", str(concurrency), "--chats", str(self.s.chats),
                       "--tag", tag], self.dispatcher_env())
        r = child.wait(600)
        cpu = monitor.stop()
        out = json.loads(r.pop("stdout").strip().splitlines()[-1])
        r.pop("stderr")
        cpu["client_cpu_s"] = r["cpu_s"]
        cpu["per_request_ms"] = {"client": round(1000 * r["cpu_s"] / requests, 3),
                                 "simulator": round(1000 * cpu["simulator_cpu_s"] / requests, 3)}
        cpu["other_busy_cores"] = round(max(0.0, cpu["machine_busy_cores"] - (
            r["cpu_s"] + cpu["simulator_cpu_s"] + cpu["postgres_cpu_s"]) / cpu["wall_s"]), 2)
        return {**out, "peak_rss_mb": r["peak_rss_mb"], "cpu_s": r["cpu_s"], "cpu": cpu}

    # -- scenarios ------------------------------------------------------------------------

    def ceiling(self) -> dict[str, Any]:
        concurrency = Settings().concurrency
        n = self.s.ceiling_requests
        self.ctl.reset()
        # A short warm-up run, then the measured one.
        self.client_run(min(1000, n), concurrency, "warm")
        self.ctl.reset()
        r = self.client_run(n, concurrency, "ceil")
        sim = self.sim_report(expected=n)
        self.ctl.reset()
        return {"requests": n, "concurrency": concurrency,
                "requests_per_s": sim.get("msgs_per_s", r["requests_per_s"]),
                "client_loop_requests_per_s": r["requests_per_s"],
                "cpu": r["cpu"],
                "outcomes": r["outcomes"], "sim": sim}

    def dispatch(self) -> dict[str, Any]:
        ceiling = self.results.get("ceiling") or self.run_scenario("ceiling")
        n = self.s.dispatch_messages
        fill = self.fill_queue(n, "disp")
        self.ctl.reset()
        (r,) = self.run_dispatchers(1, profile="dispatch")
        sim = self.sim_report(expected=n)
        counts = self.outbox_counts()
        summary = r["summary"]
        rate = sim.get("msgs_per_s", 0.0)
        out = {
            "messages": n, "channels": self.s.channels, "chats": self.s.chats,
            "msgs_per_s": rate,
            "drain_msgs_per_s": round(summary["sent"] / summary["seconds"], 1)
            if summary["seconds"] else None,
            "ceiling_requests_per_s": ceiling["requests_per_s"],
            "dispatch_over_ceiling": round(rate / ceiling["requests_per_s"], 3),
            "target": TARGETS["dispatch_over_ceiling"],
            "dispatcher": {k: r[k] for k in ("wall_s", "peak_rss_mb", "cpu_s")},
            "cpu": r["cpu"],
            "summary": summary, "sim": sim, "outbox": counts, "enqueue_many_fill": fill,
            "profiled": self.profile_dir is not None,
        }
        out["meets_target"] = out["dispatch_over_ceiling"] >= out["target"] and \
            sim.get("all_arrived_once", False)
        return out

    def latency(self) -> dict[str, Any]:
        n, limit, ms = self.s.latency_messages, self.s.latency_limit, self.s.latency_ms
        ideal = limit / (ms / 1000)
        self.ctl.reset()
        self.ctl.set_faults(latency_ms=ms)
        client = self.client_run(n, limit, "lat-client")
        client_sim = self.sim_report(expected=n)
        fill = self.fill_queue(n, "lat")
        self.ctl.reset()
        self.ctl.set_faults(latency_ms=ms)
        (r,) = self.run_dispatchers(1, concurrency=limit, channel_concurrency=limit,
                                    per_channel_claim=limit)
        sim = self.sim_report(expected=n)
        # The same at a low in-flight limit, where the CPU is not the limit:
        # what is lost here is lost in the pipeline (claim, flush), not to CPU.
        low = self.s.latency_low_limit
        low_n = max(1000, n // 2)
        self.fill_queue(low_n, "latlow")
        self.ctl.reset()
        self.ctl.set_faults(latency_ms=ms)
        (r_low,) = self.run_dispatchers(1, concurrency=low, channel_concurrency=low,
                                        per_channel_claim=low)
        sim_low = self.sim_report(expected=low_n)
        self.ctl.reset()
        low_rate = sim_low.get("steady_msgs_per_s", 0.0)
        rate = sim.get("steady_msgs_per_s", 0.0)
        out = {
            "messages": n, "latency_ms": ms, "in_flight_limit": limit,
            "ideal_msgs_per_s": ideal,
            "msgs_per_s": rate, "whole_window_msgs_per_s": sim.get("msgs_per_s"),
            "efficiency": round(rate / ideal, 3),
            "client_alone_msgs_per_s": client_sim.get("steady_msgs_per_s"),
            "client_alone_cpu": client["cpu"],
            "client_alone_efficiency": round(client_sim.get("steady_msgs_per_s", 0) / ideal, 3),
            "dispatcher_over_client": round(rate / client_sim["steady_msgs_per_s"], 3)
            if client_sim.get("steady_msgs_per_s") else None,
            "sim_max_in_flight": sim["sim_max_in_flight"],
            "mean_in_flight": round(rate * ms / 1000, 1),
            "low_limit": {"in_flight_limit": low, "messages": low_n, "msgs_per_s": low_rate,
                          "ideal_msgs_per_s": low / (ms / 1000),
                          "efficiency": round(low_rate / (low / (ms / 1000)), 3),
                          "all_arrived_once": sim_low.get("all_arrived_once"),
                          "cpu": r_low["cpu"]},
            "target": TARGETS["latency_efficiency"],
            "dispatcher": {k: r[k] for k in ("wall_s", "peak_rss_mb", "cpu_s")},
            "cpu": r["cpu"], "summary": r["summary"], "sim": sim, "fill": fill,
        }
        out["meets_target"] = out["efficiency"] >= out["target"] and \
            sim.get("all_arrived_once", False)
        return out

    def enqueue(self) -> dict[str, Any]:
        self.reset_queue()
        # enqueue_many first: batches of 1,000 per transaction (creates the chats).
        total, batch = self.s.enqueue_many_messages, self.s.enqueue_batch
        callers = self.s.enqueue_callers
        engine = make_engine(self.url, pool_size=callers)
        try:
            plans = [[self._message(i, "em") for i in range(lo, min(total, lo + batch))]
                     for lo in range(0, total, batch)]
            started = time.perf_counter()
            for plan in plans:
                with Session(engine) as s, s.begin():
                    enqueue_many(s, plan)
            many_s = time.perf_counter() - started
            # Single-message transactions, each committed, as an application
            # makes them: a Session per transaction from a pool; chats exist.
            n = self.s.enqueue_single

            def one(m: TextMessage) -> None:
                with Session(engine) as s, s.begin():
                    enqueue_text(s, channel_id=m.channel_id, to=m.to, body=m.body)

            # Several callers at once (threads, like a web app's request
            # handlers): throughput. The commits' WAL flushes overlap.
            msgs = [self._message(i, "ec") for i in range(n)]
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(callers) as pool:
                list(pool.map(one, msgs))
            concurrent_s = time.perf_counter() - started
            # One caller, one transaction after another: latency.
            msgs = [self._message(i, "es") for i in range(n)]
            started = time.perf_counter()
            for m in msgs:
                one(m)
            serial_s = time.perf_counter() - started
            # The same without a pool checkout (and its pre-ping) per transaction.
            msgs = [self._message(i, "eh") for i in range(n)]
            started = time.perf_counter()
            with engine.connect() as conn, Session(bind=conn) as s:
                for m in msgs:
                    with s.begin():
                        enqueue_text(s, channel_id=m.channel_id, to=m.to, body=m.body)
            held_s = time.perf_counter() - started
        finally:
            engine.dispose()
        counts = self.outbox_counts()
        many_rate = total / many_s
        single_rate = n / concurrent_s
        out = {
            "enqueue_many_messages": total, "batch": batch,
            "enqueue_many_msgs_per_s": round(many_rate, 1),
            "enqueue_single_transactions": n,
            "enqueue_single_callers": callers,
            "enqueue_single_tx_per_s": round(single_rate, 1),
            "enqueue_single_serial_tx_per_s": round(n / serial_s, 1),
            "enqueue_single_serial_ms_per_tx": round(1000 * serial_s / n, 3),
            "enqueue_single_held_connection_tx_per_s": round(n / held_s, 1),
            "many_over_single": round(many_rate / single_rate, 1),
            "queued_after": counts.get("queued", 0),
            "target": {"enqueue_many_msgs_per_s": TARGETS["enqueue_many_msgs_per_s"],
                       "enqueue_single_tx_per_s": TARGETS["enqueue_single_tx_per_s"]},
        }
        out["meets_target"] = (many_rate >= TARGETS["enqueue_many_msgs_per_s"]
                               and single_rate >= TARGETS["enqueue_single_tx_per_s"]
                               and counts.get("queued", 0) == total + 3 * n)
        self.reset_queue()
        return out

    def scale(self) -> dict[str, Any]:
        n = self.s.scale_messages
        runs = []
        for procs in self.s.scale_processes:
            self.fill_queue(n, f"sc{procs}")
            self.ctl.reset()
            rs = self.run_dispatchers(procs)
            sim = self.sim_report(expected=n)
            counts = self.outbox_counts()
            runs.append({
                "processes": procs, "msgs_per_s": sim.get("msgs_per_s"),
                "sent_per_process": [r["summary"]["sent"] for r in rs],
                "duplicates": sim["duplicate_bodies"], "extra_sends": sim["extra_sends"],
                "unique": sim["unique_bodies"], "all_sent": counts.get("sent", 0) == n,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                "cpu": rs[0]["cpu"],
            })
        self.ctl.reset()
        base = runs[0]["msgs_per_s"] or 1.0
        for run in runs:
            run["over_one_process"] = round((run["msgs_per_s"] or 0.0) / base, 3)
        return {"messages": n, "runs": runs,
                "duplicates_total": sum(r["duplicates"] for r in runs),
                "meets_target": all(r["duplicates"] == 0 and r["all_sent"]
                                    and r["unique"] == n for r in runs)}

    def _claim_latencies(self) -> dict[str, Any]:
        s = self.s
        params = {"per_channel": min(Settings().per_channel_claim, s.claim_batch),
                  "batch_size": s.claim_batch, "lease_seconds": 60.0}
        stmt = text(queries.CLAIM)
        samples, got = [], []
        with self.engine.connect() as conn:
            for i in range(s.claim_samples + 10):
                tx = conn.begin()
                t = time.perf_counter()
                rows = conn.execute(stmt, {**params, "claim_token": uuid.uuid4()}).all()
                dt = time.perf_counter() - t
                tx.rollback()
                if i >= 10:  # warm-up (and psycopg's auto-prepare after 5)
                    samples.append(dt * 1000)
                    got.append(len(rows))
        samples.sort()
        return {"p50_ms": round(statistics.median(samples), 2),
                "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 2),
                "mean_ms": round(statistics.fmean(samples), 2),
                "rows_per_claim": round(statistics.fmean(got), 1),
                "samples": len(samples), "plan": self._claim_plan_summary(params)}

    def _claim_plan_summary(self, params: dict[str, Any]) -> dict[str, Any]:
        with self.engine.connect() as conn:
            tx = conn.begin()
            plan = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries.CLAIM),
                                {**params, "claim_token": uuid.uuid4()}).scalar_one()
            tx.rollback()
        summary = plan_summary(plan[0])
        return {k: summary[k] for k in ("execution_ms", "seq_scans", "indexes", "shared_hit",
                                        "shared_read")}

    def load_backlog(self, queued: int, sent: int, chats: int, tag: str) -> dict[str, Any]:
        started = time.perf_counter()
        phases = load_backlog(self.conninfo, channel_ids=[c for c, _ in self.channels],
                              queued=queued, sent=sent, chats=chats, tag=tag, log=say)
        self.backlog_loaded = False
        return {"queued": queued, "sent": sent, "chats": chats,
                "seconds": round(time.perf_counter() - started, 1), "phases": phases}

    def backlog(self) -> dict[str, Any]:
        s = self.s
        small_load = self.load_backlog(s.backlog_small_queued, 0, s.chats, "sm-")
        small = self._claim_latencies()
        with psycopg.connect(self.conninfo) as conn:
            small_sizes = table_sizes(conn)
        say(f"  loading {s.backlog_queued:,} queued + {s.backlog_sent:,} sent rows ...")
        big_load = self.load_backlog(s.backlog_queued, s.backlog_sent, s.backlog_chats, "bl-")
        self.backlog_loaded = True
        big = self._claim_latencies()
        with psycopg.connect(self.conninfo) as conn:
            big_sizes = table_sizes(conn)
        ratio_p50 = big["p50_ms"] / small["p50_ms"]
        ratio_p99 = big["p99_ms"] / small["p99_ms"]
        out = {
            "claim_batch": s.claim_batch,
            "small": {"queued": s.backlog_small_queued, "sent": 0, **small},
            "big": {"queued": s.backlog_queued, "sent": s.backlog_sent,
                    "chats": s.backlog_chats, **big},
            "ratio_p50": round(ratio_p50, 2), "ratio_p99": round(ratio_p99, 2),
            "target": TARGETS["backlog_claim_ratio"],
            "sizes_small": small_sizes, "sizes_big": big_sizes,
            "load": {"small": small_load, "big": big_load},
        }
        out["meets_target"] = ratio_p50 <= out["target"] and ratio_p99 <= out["target"] and \
            "outbox_messages" not in big["plan"]["seq_scans"]
        return out

    def memory(self) -> dict[str, Any]:
        s = self.s
        d = self.results.get("dispatch")
        if d is not None and not d.get("profiled"):
            small = {"messages": d["messages"], "peak_rss_mb": d["dispatcher"]["peak_rss_mb"],
                     "msgs_per_s": d["msgs_per_s"], "from": "dispatch scenario"}
        else:
            self.fill_queue(s.dispatch_messages, "mem")
            self.ctl.reset()
            (r,) = self.run_dispatchers(1)
            sim = self.sim_report(expected=s.dispatch_messages)
            small = {"messages": s.dispatch_messages, "peak_rss_mb": r["peak_rss_mb"],
                     "msgs_per_s": sim.get("msgs_per_s")}
        if not self.backlog_loaded:
            say(f"  loading {s.backlog_queued:,} queued + {s.backlog_sent:,} sent rows ...")
            self.load_backlog(s.backlog_queued, s.backlog_sent, s.backlog_chats, "bl-")
            self.backlog_loaded = True
        self.ctl.reset()
        (r,) = self.run_dispatchers(1, "--limit", str(s.memory_drain))
        sim = self.sim_report(expected=s.memory_drain)
        big = {"queued_before": s.backlog_queued, "sent_before": s.backlog_sent,
               "drained": r["summary"]["sent"], "peak_rss_mb": r["peak_rss_mb"],
               "msgs_per_s": sim.get("msgs_per_s"), "cpu": r["cpu"],
               "duplicates": sim["duplicate_bodies"]}
        self.ctl.reset()
        peak = max(small["peak_rss_mb"], big["peak_rss_mb"])
        out = {
            "small": small, "big": big,
            "rss_big_over_small": round(big["peak_rss_mb"] / small["peak_rss_mb"], 2),
            "rate_big_over_small": round((big["msgs_per_s"] or 0) / small["msgs_per_s"], 3)
            if small.get("msgs_per_s") else None,
            "peak_rss_mb": peak, "target": TARGETS["peak_rss_mb"],
        }
        out["meets_target"] = peak <= TARGETS["peak_rss_mb"] and out["rss_big_over_small"] <= 1.2
        return out

    def statements(self) -> dict[str, Any]:
        # fill_queue empties the queue first: a small queue, like dispatch's.
        modes = measure_statements(self.conninfo, self.fill_queue,
                                   messages=self.s.statements_messages,
                                   rounds=self.s.statements_rounds, process_cpu=_proc_cpu)
        self.reset_queue()
        base = modes["prepared"]
        return {"messages": self.s.statements_messages, "rounds": self.s.statements_rounds,
                "modes": modes,
                "unprepared_over_prepared_pg_cpu": round(
                    modes["unprepared"]["postgres_cpu_us"] / base["postgres_cpu_us"], 2),
                "pipeline_over_prepared_wall": round(
                    modes["pipeline"]["wall_us"] / base["wall_us"], 2)}

    def inbox(self) -> dict[str, Any]:
        s = self.s
        loaded = load_inbox(self.conninfo, self.channels[0][0], chats=s.inbox_chats,
                            thread_messages=s.inbox_thread)
        cases = measure_inbox(self.engine, samples=s.inbox_samples, chats=s.inbox_chats)
        seq_scans = sorted({t for c in cases.values() for p in c["plans"] for t in p["seq_scans"]})
        # The target is per call; the to-first-hit case is several calls.
        per_call = [v["p99_ms"] for k, v in cases.items() if not k.endswith("_to_first_hit")]
        return {"load": loaded, "samples": s.inbox_samples, "cases": cases,
                "seq_scans": seq_scans, "target_p99_ms": 20.0,
                "meets_target": max(per_call) <= 20.0 and not seq_scans}

    def events(self) -> dict[str, Any]:
        s = self.s

        def start_serve() -> tuple[int, int, Any]:
            import socket

            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            proc = subprocess.Popen([sys.executable, "-m", "outbox", "serve", "--port",
                                     str(port)], cwd=REPO,
                                    # one key opens every stream: no per-key rate limit
                                    env=self.dispatcher_env(api_rate_limit_per_second=0),
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError), socket.create_connection(
                        ("127.0.0.1", port), timeout=1):
                    break
                if time.monotonic() > deadline or proc.poll() is not None:
                    proc.kill()
                    raise RuntimeError("outbox serve did not start")
                time.sleep(0.1)

            def stop() -> None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            return port, proc.pid, stop

        self.reset_queue()
        out = measure_events(self.engine, self.url, BENCH_KEY, self.channels[0][0],
                             start_serve=start_serve, clients=s.events_clients,
                             transactions=s.events_transactions, rate=s.events_rate,
                             callbacks=s.events_callbacks)
        self.reset_queue()
        stream, calls = out["stream"], out["callbacks"]
        out["targets"] = {k: TARGETS[k] for k in ("events_p99_ms", "events_serve_rss_mb",
                                                   "callbacks_per_s")}
        out["meets_target"] = bool(
            stream["p99_ms"] is not None and stream["p99_ms"] <= TARGETS["events_p99_ms"]
            and stream["frames_received"] == stream["frames_expected"]
            and stream["serve_rss_mb"]["peak"] <= TARGETS["events_serve_rss_mb"]
            and calls["callbacks_per_s"] >= TARGETS["callbacks_per_s"]
            and calls["bad_signatures"] == 0)
        return out

    def pacing(self) -> dict[str, Any]:
        return pacing(self, rounds=self.s.pacing_rounds)

    def headofline(self) -> dict[str, Any]:
        return head_of_line(self, huge=self.s.hol_huge_chat, traffic=self.s.hol_traffic)

    def console(self) -> dict[str, Any]:
        s = self.s
        if "inbox" not in self.results:  # the same data as the inbox scenario
            load_inbox(self.conninfo, self.channels[0][0], chats=s.inbox_chats,
                       thread_messages=s.inbox_thread)
        return measure_console(self.url, self.engine, BENCH_KEY, samples=s.inbox_samples)

    def soak(self) -> dict[str, Any]:
        return run_soak(self, minutes=self.s.soak_minutes,
                        without_analyzer=self.s.soak_without_analyzer, child=Child)

    # -- peers (scripts/bench_peers.py) --------------------------------------------------

    def _peers_child(self, *args: str) -> dict[str, Any]:
        child = Child([sys.executable, str(REPO / "scripts" / "bench_peers.py"), *args],
                      self.dispatcher_env())
        r = child.wait(1800)
        out = json.loads(r["stdout"].strip().splitlines()[-1])
        return {**out, "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
                "peak_rss_mb": r["peak_rss_mb"]}

    def _wal_lsn(self) -> int:
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            return int(conn.execute(  # type: ignore[index]
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0])

    def _row_stats(self) -> dict[str, dict[str, int]]:
        """Per table: rows inserted, updated (of which HOT), deleted, and its
        index count (what a non-HOT row version costs in index writes).
        Backends report their counts on exit or when idle for a while: the
        pool's connections are closed first so theirs are in."""
        self.engine.dispose()
        time.sleep(0.3)
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_force_next_flush()")
            rows = conn.execute(
                "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, "
                "(SELECT count(*) FROM pg_index i WHERE i.indrelid = s.relid) "
                "FROM pg_stat_user_tables s WHERE schemaname = 'outbox'").fetchall()
        return {r[0]: {"ins": r[1], "upd": r[2], "hot": r[3], "del": r[4], "indexes": r[5]}
                for r in rows}

    def _row_work(self, before: dict[str, dict[str, int]], n: int) -> dict[str, Any]:
        """Row versions and index entries written per message between two
        `_row_stats` snapshots (statistics flushed by the backends first)."""
        after = self._row_stats()
        tables: dict[str, dict[str, float]] = {}
        index_writes = 0.0
        for name, a in after.items():
            b = before.get(name, {k: 0 for k in a})
            d = {k: a[k] - b[k] for k in ("ins", "upd", "hot", "del")}
            if not any(d.values()):
                continue
            per = {k: round(v / n, 3) for k, v in d.items()}
            per["index_writes"] = round((d["ins"] + d["upd"] - d["hot"]) * a["indexes"] / n, 2)
            index_writes += per["index_writes"]
            tables[name] = per
        return {"tables": tables, "index_writes_per_msg": round(index_writes, 2)}

    def peers(self) -> dict[str, Any]:
        import asyncio

        from bench_peers import TOKEN, pgqueuer_enqueue, pgqueuer_install

        try:
            import pgqueuer  # noqa: F401
        except ImportError:
            raise SystemExit("the peers scenario needs the bench extra: "
                             ".venv/bin/pip install -e '.[bench]'") from None
        n = self.s.peers_messages
        asyncio_run = asyncio.run
        asyncio_run(pgqueuer_install(self.conninfo))
        # Empty queue: how long `dispatch --once` takes when there is nothing
        # to do (what a cron deployment pays on every run).
        self.reset_queue()
        empty = sorted(self.spawn_dispatcher().wait(60)["wall_s"]
                       for _ in range(self.s.peers_empty_runs))
        shapes: list[dict[str, Any]] = []
        for latency_ms, c in self.s.peers_shapes:
            say(f"  {latency_ms:.0f} ms, {c} in flight, {n:,} messages")
            with _fake_api(latency_ms) as api:
                url = api + "/messages/text"
                with Session(self.engine) as s, s.begin():
                    channel = create_channel(
                        s, name=f"peers-{int(latency_ms)}-{c}", phone_number="+15550999999",
                        token=TOKEN, encryption_key=BENCH_KEY, base_url=api).id
                _api_count(api, reset=True)
                raw = self._peers_child("aiohttp", "--url", url, "--n", str(n),
                                        "--concurrency", str(c))
                raw["delivered"] = _api_count(api, reset=True)
                client = None
                if latency_ms == 0:
                    child = Child([sys.executable, str(REPO / "scripts" / "bench_client.py"),
                                   "--url", api, "--tokens", TOKEN, "--requests", str(n),
                                   "--concurrency", str(c), "--chats", str(n), "--tag", "pc"],
                                  self.dispatcher_env())
                    r = child.wait(600)
                    client = json.loads(r["stdout"].strip().splitlines()[-1])
                    client["cpu_s"] = r["cpu_s"]
                    client["delivered"] = _api_count(api, reset=True)
                    client["over_raw"] = round(client["requests_per_s"] / raw["msgs_per_s"], 3)
                asyncio_run(pgqueuer_enqueue(self.conninfo, n, "pgq"))
                _api_count(api, reset=True)
                monitor = CpuMonitor(self)
                wal0 = self._wal_lsn()
                pgq = self._peers_child("pgqueuer", "--dsn", self.conninfo, "--url", url,
                                        "--n", str(n), "--concurrency", str(c))
                pgq["wal_bytes_per_msg"] = round((self._wal_lsn() - wal0) / n)
                pgq["cpu"] = monitor.stop()
                pgq["delivered"] = _api_count(api, reset=True)
                pgq["from_start_msgs_per_s"] = round(n / pgq["wall_s"], 1)
                monitor = CpuMonitor(self)
                wal0, rows0 = self._wal_lsn(), self._row_stats()
                fill_s = self._fill_one_channel(channel, n, f"pe{int(latency_ms)}")
                enqueue = {"seconds": round(fill_s, 2),
                           "wal_bytes_per_msg": round((self._wal_lsn() - wal0) / n),
                           "postgres_cpu_ms_per_msg": round(
                               1000 * monitor.stop()["postgres_cpu_s"] / n, 3),
                           **self._row_work(rows0, n)}
                self.ctl.reset()
                wal0, rows0 = self._wal_lsn(), self._row_stats()
                (ours,) = self.run_dispatchers(1, profile=f"peers-{int(latency_ms)}",
                                               concurrency=c, channel_concurrency=c)
                wal_per_msg = round((self._wal_lsn() - wal0) / n)
                row_work = self._row_work(rows0, n)
                delivered = _api_count(api, reset=True)
                counts = self.outbox_counts()
                with self.engine.begin() as conn:
                    conn.execute(text("DELETE FROM outbox.channels WHERE id = :id"),
                                 {"id": channel})
            rate = n / ours["wall_s"]
            shapes.append({
                "latency_ms": latency_ms, "in_flight": c, "messages": n,
                "raw_aiohttp": raw, "client": client, "pgqueuer": pgq,
                "ours": {"msgs_per_s": round(rate, 1), "wall_s": ours["wall_s"],
                         "drain_s": ours["summary"]["seconds"],
                         "net_of_start_msgs_per_s": round(n / ours["summary"]["seconds"], 1),
                         "sent": ours["summary"]["sent"], "delivered": delivered,
                         "outbox": counts, "cpu_s": ours["cpu_s"],
                         "peak_rss_mb": ours["peak_rss_mb"], "cpu": ours["cpu"],
                         "wal_bytes_per_msg": wal_per_msg, **row_work, "enqueue": enqueue},
                "ours_over_pgqueuer": round(rate / pgq["msgs_per_s"], 3),
                "ours_over_raw": round(rate / raw["msgs_per_s"], 3),
                "pgqueuer_over_raw": round(pgq["msgs_per_s"] / raw["msgs_per_s"], 3),
            })
        self.reset_queue()
        by = {(x["latency_ms"], x["in_flight"]): x for x in shapes}
        fast, slow = by.get((0.0, 64)), by.get((200.0, 256))
        out: dict[str, Any] = {
            "messages": n, "shapes": shapes,
            "empty_dispatch_wall_s": {"median": empty[len(empty) // 2], "runs": empty},
            "targets": {k: v for k, v in TARGETS.items() if k.startswith(("peers", "empty",
                                                                           "client"))},
        }
        checks = [out["empty_dispatch_wall_s"]["median"] <= TARGETS["empty_dispatch_wall_s"]]
        for x in shapes:
            ok = x["ours"]["delivered"] == n and x["ours"]["sent"] == n and \
                x["pgqueuer"]["delivered"] == n and x["raw_aiohttp"]["delivered"] == n
            checks.append(ok)
        if fast:
            checks.append(fast["ours_over_pgqueuer"] >= TARGETS["peers_over_pgqueuer_0ms"])
            checks.append(fast["client"]["over_raw"] >= TARGETS["client_over_raw_64"])
        if slow:
            checks.append(slow["ours_over_raw"] >= TARGETS["peers_over_raw_200ms"])
        out["meets_target"] = all(checks)
        return out

    def _fill_one_channel(self, channel_id: uuid.UUID, n: int, tag: str) -> float:
        """Empty the queue, then n texts on one channel, each to its own
        recipient (enqueue_many, 1,000 per transaction): seconds enqueueing."""
        self.reset_queue()
        started = time.perf_counter()
        batch = self.s.enqueue_batch
        for lo in range(0, n, batch):
            plan = [TextMessage(channel_id, f"+1556{i:07d}", f"{tag}-{i:07d}")
                    for i in range(lo, min(n, lo + batch))]
            with Session(self.engine) as s, s.begin():
                enqueue_many(s, plan)
        seconds = time.perf_counter() - started
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE outbox.outbox_messages, outbox.messages, outbox.chats, "
                              "outbox.contacts"))
        return seconds

    def run_scenario(self, name: str) -> dict[str, Any]:
        say(f"== {name}")
        started = time.perf_counter()
        result = getattr(self, name)()
        result = {"scenario": name, **result,
                  "scenario_seconds": round(time.perf_counter() - started, 1)}
        self.results[name] = result
        return result


# --- output ------------------------------------------------------------------------------


def _cpu(r: dict[str, Any], mode: str) -> float:
    c = r["cpu_ms_per_message"][mode]
    return float(c["dispatcher"] + c["postgres"])


def machine_info(pg_version: str) -> dict[str, Any]:
    mem_kb = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "scenario": "machine",
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "memory_gb": round(mem_kb / 2**20, 1),
        "cpu_model": _cpu_model(),
        "postgresql": pg_version,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def table(results: dict[str, dict[str, Any]]) -> str:
    rows: list[tuple[str, str, str, str]] = []

    def ok(flag: bool | None) -> str:
        return "" if flag is None else ("yes" if flag else "NO")

    r = results.get("ceiling")
    if r:
        rows.append(("ceiling", f"{r['requests_per_s']:,.0f} req/s "
                     f"({r['concurrency']} in flight)", "", ""))
    r = results.get("dispatch")
    if r:
        rows.append(("dispatch", f"{r['msgs_per_s']:,.0f} msg/s, "
                     f"dispatch/ceiling {r['dispatch_over_ceiling']:.2f}",
                     f">= {r['target']}", ok(r["meets_target"])))
    r = results.get("latency")
    if r:
        rows.append(("latency", f"{r['msgs_per_s']:,.0f} msg/s of {r['ideal_msgs_per_s']:,.0f}: "
                     f"efficiency {r['efficiency']:.2f} (client alone "
                     f"{r['client_alone_efficiency']:.2f}; at L={r['low_limit']['in_flight_limit']}"
                     f" {r['low_limit']['efficiency']:.2f})",
                     f">= {r['target']}", ok(r["meets_target"])))
    r = results.get("enqueue")
    if r:
        rows.append(("enqueue", f"enqueue_many {r['enqueue_many_msgs_per_s']:,.0f} msg/s; "
                     f"enqueue_text {r['enqueue_single_tx_per_s']:,.0f} tx/s "
                     f"({r['enqueue_single_callers']} callers; 1 caller "
                     f"{r['enqueue_single_serial_tx_per_s']:,.0f})",
                     ">= 20,000 / >= 1,000", ok(r["meets_target"])))
    r = results.get("scale")
    if r:
        parts = ", ".join(f"{x['processes']}p {x['msgs_per_s'] or 0:,.0f} "
                          f"(x{x['over_one_process']:.2f})" for x in r["runs"])
        rows.append(("scale", f"{parts} msg/s; duplicates {r['duplicates_total']}",
                     "0 duplicates", ok(r["meets_target"])))
    r = results.get("backlog")
    if r:
        rows.append(("backlog", f"claim p50 {r['small']['p50_ms']:.1f} -> {r['big']['p50_ms']:.1f} "
                     f"ms (x{r['ratio_p50']:.2f}), p99 {r['small']['p99_ms']:.1f} -> "
                     f"{r['big']['p99_ms']:.1f} ms (x{r['ratio_p99']:.2f})",
                     f"<= {r['target']}", ok(r["meets_target"])))
    r = results.get("memory")
    if r:
        rows.append(("memory", f"peak RSS {r['small']['peak_rss_mb']:.0f} MB -> "
                     f"{r['big']['peak_rss_mb']:.0f} MB with backlog "
                     f"(x{r['rss_big_over_small']:.2f})", f"<= {r['target']} MB, flat",
                     ok(r["meets_target"])))
    r = results.get("statements")
    if r:
        m = r["modes"]
        rows.append(("statements", "claim+complete, PostgreSQL CPU per message: prepared "
                     f"{m['prepared']['postgres_cpu_us']:.0f} us, unprepared "
                     f"{m['unprepared']['postgres_cpu_us']:.0f}, generic plan "
                     f"{m['generic_plan']['postgres_cpu_us']:.0f}; pipeline wall "
                     f"x{r['pipeline_over_prepared_wall']:.2f}", "", ""))
    r = results.get("inbox")
    if r:
        c = r["cases"]
        rows.append(("inbox", ", ".join(f"{k} {v['p50_ms']:.1f}/{v['p99_ms']:.1f}"
                                        for k, v in c.items()) + " ms p50/p99; seq scans: "
                     + (", ".join(r["seq_scans"]) or "none"),
                     f"p99 <= {r['target_p99_ms']:.0f} ms a call, no seq scan",
                     ok(r["meets_target"])))
    r = results.get("soak")
    if r:
        rows.append(("soak", soak_summary(r), f"last/first p50 <= {r['target']}, none lost",
                     ok(r["meets_target"])))
    r = results.get("peers")
    if r:
        for x in r["shapes"]:
            cl = (f"; our client {x['client']['requests_per_s']:,.0f} "
                  f"(x{x['client']['over_raw']:.2f} raw)") if x.get("client") else ""
            rows.append((f"peers {x['latency_ms']:.0f}ms/{x['in_flight']}",
                         f"raw aiohttp {x['raw_aiohttp']['msgs_per_s']:,.0f}, PgQueuer "
                         f"{x['pgqueuer']['msgs_per_s']:,.0f}, ours "
                         f"{x['ours']['msgs_per_s']:,.0f} msg/s from process start "
                         f"({x['ours']['net_of_start_msgs_per_s']:,.0f} net): "
                         f"x{x['ours_over_pgqueuer']:.2f} PgQueuer, "
                         f"x{x['ours_over_raw']:.2f} raw{cl}",
                         ">= 1.3 PgQueuer, >= 0.85 client" if x["latency_ms"] == 0
                         else ">= 0.95 raw", ""))
        rows.append(("peers start", f"empty-queue dispatch --once "
                     f"{r['empty_dispatch_wall_s']['median']:.2f} s wall (median)",
                     "<= 0.25 s", ok(r["meets_target"])))
    r = results.get("console")
    if r:
        p = r["pages"]
        rows.append(("console", ", ".join(f"{k} page view {v['p50_ms']:.1f}/{v['p95_ms']:.1f}"
                                          for k, v in p.items()) + " ms p50/p95",
                     f"p95 <= {r['target_p95_ms']:.0f} ms", ok(r["meets_target"])))
    r = results.get("pacing")
    if r:
        rows.append(("pacing", f"dispatch/ceiling {r['none_over_ceiling']:.2f} without limits, "
                     f"{r['limits_over_ceiling']:.2f} with limits that never bind: "
                     f"x{r['limits_over_none']:.3f}; CPU per message (dispatcher + PostgreSQL) "
                     f"{_cpu(r, 'none'):.3f} -> {_cpu(r, 'limits'):.3f} ms", f">= {r['target']}",
                     ok(r["meets_target"])))
    r = results.get("headofline")
    if r:
        a, b = r["traffic_only"], r["with_huge_chat"]
        rows.append(("headofline", f"claim p50 {a['p50_ms']:.1f} -> {b['p50_ms']:.1f} ms "
                     f"(x{r['ratio_p50']:.2f}), mean {a['mean_ms']:.1f} -> {b['mean_ms']:.1f} ms "
                     f"(x{r['ratio_mean']:.2f}), p99 {a['p99_ms']:.1f} -> {b['p99_ms']:.1f} ms "
                     f"(x{r['ratio_p99']:.2f}) with a chat of {r['huge_chat_queued']:,} queued",
                     f"<= {r['target']}", ok(r["meets_target"])))
    r = results.get("events")
    if r:
        st, cb = r["stream"], r["callbacks"]
        rows.append(("events", f"{st['clients']:,} SSE clients: p50 {st['p50_ms']} ms, p99 "
                     f"{st['p99_ms']} ms ({st['frames_received']:,}/{st['frames_expected']:,} "
                     f"frames), serve RSS {st['serve_rss_mb']['peak']:.0f} MB; callbacks "
                     f"{cb['callbacks_per_s']:,.0f}/s",
                     f"p99 <= {TARGETS['events_p99_ms']} ms, <= "
                     f"{TARGETS['events_serve_rss_mb']} MB, >= {TARGETS['callbacks_per_s']}/s",
                     ok(r["meets_target"])))
    head = ("scenario", "result", "target", "met")
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [head, tuple("-" * w for w in widths), *rows]]
    return "\n".join(lines)


# --- the peers scenario's fake API ---------------------------------------------------------


@contextlib.contextmanager
def _fake_api(latency_ms: float) -> Any:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "bench_peers.py"), "fakeapi",
                             "--port", str(port), "--latency-ms", str(latency_ms)], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                _api_count(url)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the peers fake API did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _api_count(url: str, *, reset: bool = False) -> int:
    import urllib.request

    # A loopback http URL this module made.
    with urllib.request.urlopen(url + "/count" + ("?reset=1" if reset else ""),  # noqa: S310
                                timeout=5) as r:
        return int(json.loads(r.read())["count"])


# --- database server -----------------------------------------------------------------------


def _server_url() -> str:
    url = os.environ.get("OUTBOX_DATABASE_URL")
    if url:
        return normalize_url(url)
    from outbox.db.embedded import embedded_server_url

    return embedded_server_url(REPO / ".outbox", database="postgres")


def _drop_stale_bench_databases(admin_url: str) -> None:
    """Databases left by bench runs that were killed (their pid is gone)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", ("%\\_bench\\_%",))]
        for name in names:
            pid = name.rsplit("_", 1)[-1]
            if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
                with contextlib.suppress(psycopg.Error):
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy")
    if exe is None:
        say("  --profile: py-spy not found on PATH, not profiling")
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    say(f"  profiling pid {pid} with py-spy -> {out}.txt / .svg")
    # Raw collapsed stacks (greppable) with idle frames, so the event loop's
    # waiting shows up; the flame graph is rendered from them afterwards.
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "200", "--idle",
                             "--nonblocking", "--format", "raw", "-o", f"{out}.txt"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    p.add_argument("--only", help="comma-separated scenarios of "
                   f"{','.join((*SCENARIOS, *ONLY_WHEN_NAMED))}")
    p.add_argument("--backlog-queued", type=int, help="override the backlog's queued rows")
    p.add_argument("--backlog-sent", type=int, help="override the backlog's sent rows")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="record the dispatch scenario's dispatcher with py-spy into DIR")
    p.add_argument("--keep-db", action="store_true", help="don't drop the bench database")
    p.add_argument("--minutes", type=float, help="how long the soak scenario runs (default 10)")
    p.add_argument("--soak-without-analyzer", action="store_true",
                   help="hold the daemon's analyzer off during the soak (a before/after)")
    p.add_argument("--n", type=int, help="messages per peers run (default 20,000; quick 5,000)")
    args = p.parse_args(argv)
    names = list(SCENARIOS)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in (*SCENARIOS, *ONLY_WHEN_NAMED)]
        if unknown:
            p.error(f"unknown scenario(s): {', '.join(unknown)}")
        names = [n for n in (*SCENARIOS, *ONLY_WHEN_NAMED) if n in wanted]
    sizes = QUICK if args.quick else FULL
    if args.minutes is not None:
        sizes = replace(sizes, soak_minutes=args.minutes)
    sizes = replace(sizes, soak_without_analyzer=args.soak_without_analyzer)
    if args.backlog_queued is not None:
        sizes = replace(sizes, backlog_queued=args.backlog_queued)
    if args.n is not None:
        sizes = replace(sizes, peers_messages=args.n)
    if args.backlog_sent is not None:
        sizes = replace(sizes, backlog_sent=args.backlog_sent)
    started = time.perf_counter()
    with Bench(sizes, profile_dir=args.profile, keep_db=args.keep_db) as bench:
        machine = machine_info(bench.pg_version)
        machine["sizes"] = "quick" if args.quick else "full"
        machine["command"] = "scripts/bench " + " ".join(argv if argv is not None else sys.argv[1:])
        print(json.dumps(machine), flush=True)
        for name in names:
            result = bench.run_scenario(name)
            print(json.dumps(result), flush=True)
        machine_end = {"load_average_end": [round(x, 2) for x in os.getloadavg()],
                       "total_seconds": round(time.perf_counter() - started, 1)}
    print()
    print(f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), "
          f"{machine['memory_gb']} GB, PostgreSQL {machine['postgresql']}, "
          f"Python {machine['python']}; load average {machine['load_average'][0]} at start, "
          f"{machine_end['load_average_end'][0]} at end; {machine_end['total_seconds']:.0f}s")
    print(table(bench.results))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
