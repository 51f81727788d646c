"""Chaos run (issue 6, item 1): `scripts/chaos [--quick] [--messages N] [--seconds S]`.

Sets up like scripts/bench (and through its `Bench`): PostgreSQL from
OUTBOX_DATABASE_URL (a database `<name>_bench_<pid>` next to it) or the
embedded server in ./.outbox, made fresh, migrated and dropped at the end;
20 channels on the Whapi simulator (loopback); messages spread over the
chats round-robin (chat k on channel k % 20).

Then:
1. enqueue a share of the messages (`--preload`, default half); the rest is
   enqueued while the faults run, in transactions of 250 with idempotency
   keys (so a commit cut by the connection kill is retried safely);
2. for `--seconds` (default 180), three `outbox run` daemons drain the queue
   while
   - the simulator answers 503 to 10% of sends (global fault), with 10 +- 10
     ms latency;
   - a rotating channel answers 429 to everything (a new channel every 3-6
     s; Retry-After of 1, 2, 3 or 5 s, or none: then the dispatcher's own
     escalating pause);
   - 0.3% of requests hang past the client timeout (2 s); the global fault
     alternates every 15 s between plain hangs (never processed) and
     `hang_after_send` (recorded as accepted, then never answered);
   - every 4-8 s one daemon gets SIGKILL and a new one starts;
   - once (half-way) every connection to the database is terminated
     (pg_terminate_backend);
   - a poller reads `channels` every 0.1 s and records every pause;
3. settle: faults cleared, the daemons keep running until nothing is
   `queued` or `sending` (or `--settle-seconds`), then get SIGTERM;
4. compare the simulator's records with the database (scripts/chaos_analysis.py
   defines every figure) and print one JSON object and a table.

Exit code 1 if a message was lost, a chat's order was broken, or a channel
accepted a send during its pause; 0 otherwise. Not part of the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg  # noqa: E402
from bench import Bench, Sizes, say  # noqa: E402
from chaos_analysis import (  # noqa: E402
    Kill,
    PauseObservation,
    Rec,
    Row,
    delivery,
    duplicates,
    enqueue_order_mismatches,
    kill_attempts,
    order_violations,
    pause_violations,
    pause_windows,
)
from sqlalchemy.exc import DBAPIError  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from outbox.database import make_engine  # noqa: E402
from outbox.enqueue import enqueue_many  # noqa: E402
from outbox.providers.simulator.control import SimulatorControl  # noqa: E402

TAG = "chaos"


@dataclass(frozen=True)
class Plan:
    messages: int = 50_000
    channels: int = 20
    chats: int = 2_000
    seconds: float = 180.0  # the chaos window
    settle_seconds: float = 300.0  # longest wait for the queue to empty afterwards
    preload: float = 0.5  # share enqueued before the daemons start
    trickle_share: float = 0.7  # the rest is enqueued over this share of the window
    trickle_batch: int = 250
    daemons: int = 3
    kill_every: tuple[float, float] = (4.0, 8.0)
    rotate_every: tuple[float, float] = (3.0, 6.0)
    retry_afters: tuple[float | None, ...] = (None, None, 1.0, 2.0, 3.0, 5.0)
    hang_phase_seconds: float = 15.0
    error_rate: float = 0.1
    error_status: int = 503
    hang_rate: float = 0.003
    latency_ms: float = 10.0
    latency_jitter_ms: float = 10.0
    terminate_at: float = 0.5  # share of the window at which all connections are killed
    # The daemons' settings (OUTBOX_*):
    client_timeout: float = 2.0
    lease_seconds: float = 5.0
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 8.0
    rate_limit_pause_seconds: float = 2.0
    rate_limit_pause_cap_seconds: float = 20.0
    circuit_breaker_failures: int = 20
    circuit_breaker_pause_seconds: float = 5.0
    seed: int = 6

    def daemon_settings(self) -> dict[str, Any]:
        return {
            "whapi_timeout_seconds": self.client_timeout,
            "lease_seconds": self.lease_seconds,
            "backoff_base_seconds": self.backoff_base_seconds,
            "backoff_cap_seconds": self.backoff_cap_seconds,
            "rate_limit_pause_seconds": self.rate_limit_pause_seconds,
            "rate_limit_pause_cap_seconds": self.rate_limit_pause_cap_seconds,
            "circuit_breaker_failures": self.circuit_breaker_failures,
            "circuit_breaker_pause_seconds": self.circuit_breaker_pause_seconds,
            "prune_sent_after_seconds": 7 * 86400,  # keep every row for the checks
            "log_level": "INFO",
        }


FULL = Plan()
QUICK = Plan(messages=5_000, chats=250, seconds=60.0, settle_seconds=90.0)


# --- database access that survives pg_terminate_backend ---------------------------------


class Pg:
    """One autocommit connection, reopened after it is lost."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.conn: psycopg.Connection[Any] | None = None
        self.reconnects = 0

    def query(self, sql: str, params: Any = None, *, attempts: int = 50) -> list[Any]:
        for attempt in range(attempts):
            try:
                if self.conn is None or self.conn.closed:
                    self.conn = psycopg.connect(self.conninfo, autocommit=True,
                                                connect_timeout=5)
                cur = self.conn.execute(sql, params)
                return cur.fetchall() if cur.description else []
            except psycopg.OperationalError:
                if attempt == attempts - 1:
                    raise
                self.close()
                self.reconnects += 1
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


# --- the pause poller --------------------------------------------------------------------


class PausePoller(threading.Thread):
    """Every `interval` s, every channel that is paused (a paused_until, or a
    status other than active). A pause is identified by the write that set
    it (updated_at, paused_until): kept with the first and last time seen."""

    SQL = ("SELECT id::text, status, extract(epoch FROM paused_until)::float8, "
           "extract(epoch FROM updated_at)::float8, pause_reason, "
           "extract(epoch FROM clock_timestamp())::float8 FROM outbox.channels "
           "WHERE paused_until IS NOT NULL OR status <> 'active'")

    def __init__(self, conninfo: str, token_of: dict[str, str], interval: float = 0.1) -> None:
        super().__init__(name="chaos-pause-poller", daemon=True)
        self.pg = Pg(conninfo)
        self.token_of = token_of
        self.interval = interval
        self.stop_event = threading.Event()
        # (channel, status, paused_from, paused_until) -> [first_seen, last_seen, reason]
        self.seen: dict[tuple[str, str, float, float | None], list[Any]] = {}
        self.polls = 0
        self.errors = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                for cid, status, until, updated, reason, now in self.pg.query(self.SQL):
                    if until is not None and until <= updated:
                        continue  # not a pause: a later write touched a row whose pause had run out
                    key = (self.token_of[cid], status, updated, until)
                    entry = self.seen.get(key)
                    if entry is None:
                        self.seen[key] = [now, now, reason]
                    else:
                        entry[1] = now
                self.polls += 1
            except Exception:
                self.errors += 1
            self.stop_event.wait(self.interval)
        self.pg.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=10)

    def observations(self) -> list[PauseObservation]:
        return [PauseObservation(channel=tok, status=status, paused_from=frm,
                                 paused_until=until, seen_at=last, reason=reason)
                for (tok, status, frm, until), (_, last, reason) in self.seen.items()]

    def visibility_lag(self) -> dict[str, float]:
        """first poll that saw a pause - its transaction's now(): an upper
        bound on how long the pausing transaction took to commit (+ poll gap)."""
        lags = sorted(first - frm for (_, _, frm, _), (first, _, _) in self.seen.items())
        if not lags:
            return {}
        return {"p50_s": round(lags[len(lags) // 2], 3), "max_s": round(lags[-1], 3)}


# --- enqueue during the chaos ------------------------------------------------------------


class Trickle(threading.Thread):
    """Enqueue messages [lo, hi) evenly over `duration` s, `batch` per
    transaction. Idempotency keys make a retry after a lost commit safe."""

    def __init__(self, bench: Bench, lo: int, hi: int, duration: float, batch: int) -> None:
        super().__init__(name="chaos-trickle", daemon=True)
        self.bench, self.lo, self.hi, self.batch = bench, lo, hi, batch
        self.duration = duration
        self.stop_event = threading.Event()
        self.enqueued = 0
        self.retries = 0
        self.duplicates_on_retry = 0
        self.error: str | None = None

    def run(self) -> None:
        engine = make_engine(self.bench.url, pool_size=1)
        try:
            starts = list(range(self.lo, self.hi, self.batch))
            gap = self.duration / max(1, len(starts))
            t0 = time.monotonic()
            for n, lo in enumerate(starts):
                if self.stop_event.wait(max(0.0, t0 + n * gap - time.monotonic())):
                    return
                plan = [replace(self.bench._message(i, TAG), idempotency_key=f"{TAG}-{i}")
                        for i in range(lo, min(self.hi, lo + self.batch))]
                while True:
                    try:
                        with Session(engine) as s, s.begin():
                            results = enqueue_many(s, plan)
                        break
                    except DBAPIError:
                        # The connection was terminated, maybe during COMMIT:
                        # the same keys again either insert or find the rows.
                        self.retries += 1
                        time.sleep(0.2)
                self.duplicates_on_retry += sum(1 for r in results if r.duplicate)
                self.enqueued += len(plan)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"[:500]
        finally:
            engine.dispose()


# --- the daemons -------------------------------------------------------------------------


class Sending(NamedTuple):
    """A row `sending`, as a kill's snapshot sees it."""

    claim_token: str
    body: str
    locked_until: float
    started: bool  # its request had started (see Chaos._started_column)


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    started: float
    log_path: Path
    killed: bool = False


class Daemons:
    def __init__(self, env: dict[str, str], logdir: Path, count: int) -> None:
        self.env, self.logdir, self.count = env, logdir, count
        self.live: list[Daemon] = []
        self.all: list[Daemon] = []
        self.crashes: list[dict[str, Any]] = []

    def start(self) -> Daemon:
        log_path = self.logdir / f"daemon-{len(self.all):03d}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "outbox", "run"], cwd=REPO,
                                    env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT)
        named = log_path.with_name(f"{log_path.stem}-pid{proc.pid}.log")
        log_path.rename(named)  # the child keeps writing to the open file
        d = Daemon(proc, time.time(), named)
        self.live.append(d)
        self.all.append(d)
        return d

    def fill(self) -> None:
        while len(self.live) < self.count:
            self.start()

    def check(self) -> None:
        """A daemon that exited on its own is a crash: record it, replace it."""
        for d in list(self.live):
            rc = d.proc.poll()
            if rc is not None:
                self.live.remove(d)
                tail = d.log_path.read_text(errors="replace")[-2000:]
                self.crashes.append({"pid": d.proc.pid, "exit_code": rc,
                                     "after_s": round(time.time() - d.started, 1),
                                     "log_tail": tail})
                say(f"  daemon {d.proc.pid} exited by itself with {rc}; starting another")
        self.fill()

    def kill(self, victim: Daemon) -> None:
        victim.killed = True
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(timeout=30)
        self.live.remove(victim)

    def terminate_all(self, timeout: float) -> list[int | None]:
        for d in self.live:
            d.proc.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        deadline = time.monotonic() + timeout
        for d in self.live:
            try:
                codes.append(d.proc.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                codes.append(None)
                d.proc.kill()
                d.proc.wait(timeout=30)
        self.live = []
        return codes

    def kill_all(self) -> None:
        for d in self.live:
            if d.proc.poll() is None:
                d.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    d.proc.wait(timeout=30)
        self.live = []

    def rescues(self) -> dict[str, int]:
        """What the daemons' rescuers logged: rows whose lease ran out, for
        any reason (requeued or dead-lettered), and of those, how many got
        their attempt back (their request had never started)."""
        total: Counter[str] = Counter()
        for d in self.all:
            for line in d.log_path.read_text(errors="replace").splitlines():
                if '"rescued_expired_leases"' not in line:
                    continue
                with contextlib.suppress(ValueError):
                    ev = json.loads(line)
                    for key in ("requeued", "failed", "refunded"):
                        total[key] += int(ev.get(key, 0))
        rescued = total["requeued"] + total["failed"]
        return {"rescued": rescued, "refunded": total["refunded"],
                "rescued_attempts_spent": rescued - total["refunded"]}

    def log_events(self) -> dict[str, Any]:
        """Warnings and errors the daemons logged (JSON lines), and anything
        that was not JSON (a traceback would be)."""
        events: Counter[str] = Counter()
        other = 0
        examples: list[str] = []
        for d in self.all:
            for line in d.log_path.read_text(errors="replace").splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    other += 1
                    if len(examples) < 5:
                        examples.append(line[:300])
                    continue
                if not isinstance(ev, dict):
                    continue
                level = str(ev.get("level", ""))
                if level in ("warning", "error", "critical") or ev.get("event") in (
                        "database_reachable_again", "listen_reconnected"):
                    name = re.sub(r"\(.*\)|\d+", "#", str(ev.get("event")))[:90]
                    events[f"{level}:{name}"] += 1
        return {"events": dict(events.most_common()), "non_json_lines": other,
                "non_json_examples": examples}


# --- the run -----------------------------------------------------------------------------


@dataclass
class Observed:
    kills: list[dict[str, Any]] = field(default_factory=list)
    kill_records: list[Kill] = field(default_factory=list)
    rotations: list[dict[str, Any]] = field(default_factory=list)
    terminations: list[dict[str, Any]] = field(default_factory=list)
    hang_phases: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)


class Chaos:
    def __init__(self, plan: Plan, bench: Bench, logdir: Path) -> None:
        self.p = plan
        self.bench = bench
        self.ctl: SimulatorControl = bench.ctl
        self.rng = random.Random(plan.seed)
        self.pg = Pg(bench.conninfo)
        self.tokens = [tok for _, tok in bench.channels]
        self.token_of = {str(cid): tok for cid, tok in bench.channels}
        env = bench.dispatcher_env(**plan.daemon_settings())
        self.daemons = Daemons(env, logdir, plan.daemons)
        self.poller = PausePoller(bench.conninfo, self.token_of)
        self.obs = Observed()
        self.trickle: Trickle | None = None
        self._orphan_checks: list[tuple[float, Kill, dict[int, Sending]]] = []
        self._started_sql = self._started_column()
        self._orphaned: set[tuple[int, str]] = set()
        self._hang_after_send = False
        self._hang_phase_start = (0.0, 0)
        self._current_429: str | None = None
        self.t0 = 0.0

    # -- faults ----------------------------------------------------------------------

    def _global_faults(self) -> None:
        p = self.p
        self.ctl.set_faults(error_rate=p.error_rate, error_status=p.error_status,
                            hang_rate=p.hang_rate, hang_after_send=self._hang_after_send,
                            latency_ms=p.latency_ms, latency_jitter_ms=p.latency_jitter_ms)

    def _toggle_hang_mode(self, *, final: bool = False) -> None:
        now, hangs = time.time(), self.ctl.stats().hangs
        start, hangs0 = self._hang_phase_start
        if start:
            self.obs.hang_phases.append({"from": start, "to": now,
                                         "after_send": self._hang_after_send,
                                         "hangs": hangs - hangs0})
        self._hang_phase_start = (now, hangs)
        if final:
            return
        self._hang_after_send = not self._hang_after_send if start else False
        self._global_faults()

    def _rotate_429(self) -> None:
        if self._current_429 is not None:
            self.ctl.clear_faults(token=self._current_429)
        token = self.rng.choice([t for t in self.tokens if t != self._current_429])
        retry_after = self.rng.choice(self.p.retry_afters)
        # error_rate 1: every request of this channel gets 429 (the global 10%
        # would otherwise apply to the token scope's status too).
        self.ctl.set_faults(token=token, error_status=429, error_rate=1.0,
                            retry_after=retry_after)
        self._current_429 = token
        self.obs.rotations.append({"at": time.time(), "channel": self.tokens.index(token),
                                   "retry_after": retry_after})

    # -- kills and the connection massacre --------------------------------------------

    def _started_column(self) -> str:
        """How to read "its request had started". Before send_started_at
        (migration 0007) the rescuer refunded nothing: every rescued row
        counted as started, so this harness measures that code too."""
        has = self.pg.query(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'outbox' "
            "AND table_name = 'outbox_messages' AND column_name = 'send_started_at'")
        return "send_started_at IS NOT NULL" if has else "true"

    def _sending(self) -> dict[int, Sending]:
        return {r[0]: Sending(*r[1:]) for r in self.pg.query(
            "SELECT id, claim_token::text, payload->>'body', "
            "extract(epoch FROM locked_until)::float8, " + self._started_sql
            + " FROM outbox.outbox_messages WHERE status = 'sending'")}

    def _kill_one(self) -> None:
        victim = self.rng.choice(self.daemons.live)
        at = time.time()
        self.daemons.kill(victim)
        # Read once the victim is dead: it can claim, extend or start nothing
        # more, so every row it held is here as it will stay.
        held = self._sending()
        self.daemons.start()
        kill = {"at": at, "t": round(at - self.t0, 2), "pid": victim.proc.pid,
                "age_s": round(at - victim.started, 1), "sending_at_kill": len(held)}
        self.obs.kills.append(kill)
        # A client timeout later, the rows still `sending` under the same
        # claim token are the dead worker's: the live ones have finished.
        due = time.monotonic() + self.p.client_timeout + 0.5
        self._orphan_checks.append((due, Kill(at, victim.proc.pid, len(held), frozenset()),
                                    held))

    def _run_orphan_checks(self, *, force: bool = False) -> None:
        now = time.monotonic()
        keep = []
        for due, kill, before in self._orphan_checks:
            if due > now and not force:
                keep.append((due, kill, before))
                continue
            after = self._sending()
            # Same claim and same lease end: no heartbeat touched them, so
            # they are the dead worker's. Rows an earlier kill already
            # orphaned (waiting for their lease and the rescuer) are that
            # kill's, not this one's.
            held = {(oid, s.claim_token) for oid, s in before.items()
                    if (a := after.get(oid)) is not None and a.claim_token == s.claim_token
                    and a.locked_until == s.locked_until} - self._orphaned
            self._orphaned |= held
            orphans = frozenset(before[oid].body for oid, _ in held)
            started = frozenset(before[oid].body for oid, _ in held if after[oid].started)
            self.obs.kill_records.append(replace(kill, orphaned_bodies=orphans,
                                                 started_bodies=started))
            for k in self.obs.kills:
                if k["at"] == kill.at:
                    k["orphaned"] = len(orphans)
                    k["orphans_started"] = len(started)
        self._orphan_checks = keep

    def _terminate_connections(self) -> None:
        sending = len(self._sending())
        at = time.time()
        with psycopg.connect(self.bench.conninfo, autocommit=True) as conn:
            n = conn.execute(
                "SELECT count(*) FILTER (WHERE t) FROM (SELECT pg_terminate_backend(pid) AS t "
                "FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid()) x").fetchone()[0]  # type: ignore[index]
        self.obs.terminations.append({"at": at, "t": round(at - self.t0, 2),
                                      "connections_terminated": n, "sending_before": sending})
        say(f"  t={at - self.t0:5.1f}s terminated {n} database connections")

    # -- phases -----------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self.pg.query(
            "SELECT status, count(*) FROM outbox.outbox_messages GROUP BY status")}

    def _progress(self, phase: str) -> None:
        c = self.counts()
        st = self.ctl.stats()
        row = {"t": round(time.time() - self.t0, 1), "phase": phase,
               "accepted": st.accepted, **c, "kills": len(self.obs.kills)}
        self.obs.timeline.append(row)
        say(f"  t={row['t']:5.1f}s {phase:6} accepted {st.accepted:6d}  "
            + "  ".join(f"{k} {v}" for k, v in sorted(c.items()))
            + f"  kills {len(self.obs.kills)}")

    def run(self) -> dict[str, Any]:
        p = self.p
        n_pre = int(p.messages * p.preload)
        say(f"enqueueing {n_pre:,} of {p.messages:,} messages over {p.channels} channels, "
            f"{p.chats:,} chats")
        fill = self.bench.fill_queue(n_pre, TAG)
        self.ctl.reset()
        self.poller.start()
        self.t0 = time.time()
        self._toggle_hang_mode()
        self._rotate_429()
        self.daemons.fill()
        if n_pre < p.messages:
            self.trickle = Trickle(self.bench, n_pre, p.messages, p.seconds * p.trickle_share,
                                   p.trickle_batch)
            self.trickle.start()
        say(f"chaos for {p.seconds:.0f}s: {p.daemons} daemons, SIGKILL every "
            f"{p.kill_every[0]:g}-{p.kill_every[1]:g}s, 429 rotating every "
            f"{p.rotate_every[0]:g}-{p.rotate_every[1]:g}s, {p.error_rate:.0%} "
            f"{p.error_status}, hang rate {p.hang_rate:g}")
        mono0 = time.monotonic()
        end = mono0 + p.seconds
        next_kill = mono0 + self.rng.uniform(*p.kill_every)
        next_rotate = mono0 + self.rng.uniform(*p.rotate_every)
        next_toggle = mono0 + p.hang_phase_seconds
        terminate_at = mono0 + p.seconds * p.terminate_at
        terminated = False
        next_progress = mono0 + 10
        while (now := time.monotonic()) < end:
            self.daemons.check()
            if now >= next_rotate:
                self._rotate_429()
                next_rotate = now + self.rng.uniform(*p.rotate_every)
            if now >= next_kill:
                self._kill_one()
                next_kill = now + self.rng.uniform(*p.kill_every)
            if not terminated and now >= terminate_at:
                self._terminate_connections()
                terminated = True
            if now >= next_toggle:
                self._toggle_hang_mode()
                next_toggle = now + p.hang_phase_seconds
            self._run_orphan_checks()
            if now >= next_progress:
                self._progress("chaos")
                next_progress = now + 10
            time.sleep(0.05)
        chaos_end = time.time()
        # -- settle -----------------------------------------------------------------
        self._toggle_hang_mode(final=True)
        self.ctl.clear_faults()
        if self.trickle is not None:
            self.trickle.join()
        say(f"faults cleared; settling (at most {p.settle_seconds:.0f}s)")
        settle_deadline = time.monotonic() + p.settle_seconds
        settled = False
        next_progress = time.monotonic()
        while time.monotonic() < settle_deadline:
            self.daemons.check()
            self._run_orphan_checks()
            c = self.counts()
            if c.get("queued", 0) + c.get("sending", 0) == 0 and not self._orphan_checks:
                settled = True
                break
            if time.monotonic() >= next_progress:
                self._progress("settle")
                next_progress = time.monotonic() + 10
            time.sleep(0.5)
        self._run_orphan_checks(force=True)
        settle_s = time.time() - chaos_end
        self._progress("done")
        codes = self.daemons.terminate_all(timeout=45)
        time.sleep(0.5)  # requests answered after the daemons' last word land in the records
        self.poller.stop()
        return {"fill": fill, "chaos_seconds": round(chaos_end - self.t0, 1),
                "settle_seconds": round(settle_s, 1), "settled": settled,
                "sigterm_exit_codes": codes}

    def cleanup(self) -> None:
        self.daemons.kill_all()
        if self.trickle is not None:
            self.trickle.stop_event.set()
        if self.poller.is_alive():
            self.poller.stop()
        self.pg.close()

    # -- results ----------------------------------------------------------------------------

    def collect(self) -> tuple[list[Rec], list[Row], dict[str, str]]:
        records = [Rec(r.seq, r.token, r.to, str(r.body), r.received_at, r.id)
                   for r in self.ctl.sent()]
        raw = self.pg.query(
            "SELECT o.payload->>'body', o.id, o.status, o.attempts, o.last_error, m.status, "
            "m.wa_message_id, o.chat_id::text FROM outbox.outbox_messages o "
            "JOIN outbox.messages m ON m.id = o.message_id")
        rows = [Row(body=r[0], outbox_id=r[1], status=r[2], attempts=r[3], last_error=r[4],
                    message_status=r[5], wa_message_id=r[6]) for r in raw]
        chat_of_body = {r[0]: r[7] for r in raw}
        return records, rows, chat_of_body


def analyse(chaos: Chaos, run: dict[str, Any]) -> dict[str, Any]:
    p = chaos.p
    records, rows, chat_of_body = chaos.collect()
    expected = [f"{TAG}-{i:07d}" for i in range(p.messages)]
    stats = chaos.ctl.stats()
    d = delivery(expected, records, rows)
    obs = chaos.obs
    after_send = [(h["from"], h["to"]) for h in obs.hang_phases if h["after_send"]]
    dup = duplicates(records, rows, kills=obs.kill_records, after_send_phases=after_send,
                     terminations=[t["at"] for t in obs.terminations],
                     client_timeout=p.client_timeout)
    dup.update({
        "kills": len(obs.kills),
        "rows_sending_at_kills": sum(k["sending_at_kill"] for k in obs.kills),
        "rows_orphaned_by_kills": sum(k.get("orphaned", 0) for k in obs.kills),
        **chaos.daemons.rescues(),
        "hangs_after_send": sum(h["hangs"] for h in obs.hang_phases if h["after_send"]),
        "hangs_plain": sum(h["hangs"] for h in obs.hang_phases if not h["after_send"]),
        "db_terminations": len(obs.terminations),
        "rows_sending_at_termination": sum(t["sending_before"] for t in obs.terminations),
    })
    dup["rescued_attempts_spent_per_kill"] = round(
        dup["rescued_attempts_spent"] / max(len(obs.kills), 1), 2)
    dup.update(kill_attempts(obs.kill_records))
    order = order_violations(records)
    order["enqueue_order_mismatches"] = enqueue_order_mismatches(rows, chat_of_body)
    grace = p.client_timeout + 1.0
    windows = pause_windows(chaos.poller.observations())
    pauses = pause_violations(records, windows, grace=grace)
    pauses["rotations_429"] = len(obs.rotations)
    pauses["rotations_with_retry_after"] = sum(1 for r in obs.rotations
                                               if r["retry_after"] is not None)
    pauses["poller"] = {"polls": chaos.poller.polls, "errors": chaos.poller.errors,
                        "visibility_lag": chaos.poller.visibility_lag()}
    reasons: Counter[str] = Counter()
    for ws in windows.values():
        for w in ws:
            for r in w.reasons:
                reasons[r.split(" (")[0][:60]] += 1
    pauses["window_reasons"] = dict(reasons)
    trickle = chaos.trickle
    daemons = {
        "started": len(chaos.daemons.all),
        "crashes": chaos.daemons.crashes,
        "sigterm_exit_codes": run.pop("sigterm_exit_codes"),
        "logs": chaos.daemons.log_events(),
    }
    checks = {
        "lost_is_zero": d["lost"] == 0,
        "order_violations_zero": order["violations"] == 0,
        "pause_violations_zero": pauses["violations"] == 0,
    }
    return {
        "plan": {k: v for k, v in asdict(p).items()},
        "run": {**run, "trickle": None if trickle is None else {
            "enqueued": trickle.enqueued, "retried_transactions": trickle.retries,
            "duplicates_on_retry": trickle.duplicates_on_retry, "error": trickle.error}},
        "delivery": d,
        "duplicates": dup,
        "order": order,
        "pauses": pauses,
        "daemons": daemons,
        "simulator": {"requests": stats.requests, "accepted": stats.accepted,
                      "rejected": stats.rejected, "hangs": stats.hangs,
                      "max_in_flight": stats.max_in_flight},
        "events": {"kills": obs.kills, "terminations": obs.terminations,
                   "hang_phases": obs.hang_phases, "timeline": obs.timeline},
        "checks": checks,
        "ok": all(checks.values()),
    }


def table(r: dict[str, Any]) -> str:
    d, dup, order, pz = r["delivery"], r["duplicates"], r["order"], r["pauses"]
    run, dm = r["run"], r["daemons"]

    def ok(flag: bool) -> str:
        return "yes" if flag else "NO"

    failed = ", ".join(f"{n} {reason!r}" for reason, n in d["failed_reasons"].items()) or "-"
    causes = ", ".join(f"{k} {v}" for k, v in dup["by_cause"].items()) or "-"
    rows = [
        ("enqueued", f"{d['enqueued']:,} ({d['rows_in_db']:,} rows in the database)", "", ""),
        ("sent (unique, simulator)", f"{d['sent_unique']:,} of {d['accepted_records']:,} "
         f"accepted requests", "", ""),
        ("failed", f"{d['failed']:,} ({d['failed_but_delivered']} of them delivered): {failed}",
         "", ""),
        ("still queued / sending", f"{d['still_queued']} / {d['still_sending']}"
         + ("" if run["settled"] else " (settle timed out)"), "", ""),
        ("LOST", f"{d['lost']} (db sent but not in simulator {d['db_sent_not_in_simulator']}, "
         f"wrong wa id {d['db_sent_wrong_wa_message_id']}, status mismatches "
         f"{sum(d['outbox_vs_message_status_mismatch'].values())})", "0",
         ok(r["checks"]["lost_is_zero"])),
        ("duplicates", f"{dup['duplicate_bodies']} bodies, {dup['extra_sends']} extra sends "
         f"({causes})", "explained", ""),
        ("  explained by", f"{dup['kills']} SIGKILLs ({dup['rows_sending_at_kills']} rows "
         f"sending at the kills, {dup['rows_orphaned_by_kills']} orphaned), "
         f"{dup['hangs_after_send']} hang_after_send, {dup['hangs_plain']} plain hangs, "
         f"{dup['db_terminations']} connection kill", "", ""),
        ("  attempts per kill", f"{dup['attempts_spent_per_kill']:.2f} spent "
         f"({dup['attempts_spent_by_kills']} of the {dup['orphaned']} orphaned rows had "
         f"started; rescuers, any cause: {dup['rescued']} expired leases, "
         f"{dup['refunded']} refunded, {dup['rescued_attempts_spent_per_kill']:.2f} "
         f"spent per kill)", "", ""),
        ("  kill window", "accepted -> SIGKILL, kill duplicates: " + (", ".join(
            f"{k} {v}s" for k, v in dup["kill_accept_to_kill_seconds"].items() if k != "n")
            or "-"), "", ""),
        ("per-chat order violations", f"{order['violations']} over {order['chats_checked']} "
         f"chats (enqueue-order premise mismatches {order['enqueue_order_mismatches']})", "0",
         ok(r["checks"]["order_violations_zero"])),
        ("sends during a pause", f"{pz['violations']} ({pz['in_flight_tail']} in the first "
         f"{pz['grace_seconds']:g}s in-flight tail; {pz['windows']} pause windows on "
         f"{pz['channels_paused']} channels, {pz['rotations_429']} 429 rotations)", "0",
         ok(r["checks"]["pause_violations_zero"])),
        ("daemons", f"{dm['started']} started, {len(dm['crashes'])} crashed, SIGTERM exit "
         f"codes {dm['sigterm_exit_codes']}", "", ""),
        ("time", f"chaos {run['chaos_seconds']:.0f}s, settle {run['settle_seconds']:.0f}s",
         "", ""),
    ]
    head = ("figure", "value", "must be", "ok")
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                     for row in [head, tuple("-" * w for w in widths), *rows])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help=f"{QUICK.messages:,} messages over {QUICK.chats} chats, "
                         f"{QUICK.seconds:.0f}s of chaos (about 2 minutes)")
    ap.add_argument("--messages", type=int, help="messages to enqueue")
    ap.add_argument("--seconds", type=float, help="length of the chaos window")
    ap.add_argument("--settle-seconds", type=float, help="longest settle after the chaos")
    ap.add_argument("--chats", type=int, help="chats the messages are spread over")
    ap.add_argument("--seed", type=int, help="seed for the harness's choices")
    ap.add_argument("--keep-db", action="store_true", help="don't drop the database")
    ap.add_argument("--keep-logs", type=Path, metavar="DIR",
                    help="copy the daemons' logs (JSON lines) into DIR")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    for name in ("messages", "seconds", "settle_seconds", "chats", "seed"):
        value = getattr(args, name)
        if value is not None:
            plan = replace(plan, **{name: value})
    if plan.messages < 1 or plan.seconds <= 0 or plan.chats < 1:
        ap.error("--messages, --seconds and --chats must be positive")
    started = time.time()
    with Bench(Sizes(channels=plan.channels, chats=plan.chats), profile_dir=None,
               keep_db=args.keep_db) as bench, \
            tempfile.TemporaryDirectory(prefix="chaos-logs-") as logdir:
        chaos = Chaos(plan, bench, Path(logdir))
        try:
            run = chaos.run()
            result = analyse(chaos, run)
        finally:
            chaos.cleanup()
            if args.keep_logs is not None:
                shutil.copytree(logdir, args.keep_logs, dirs_exist_ok=True)
    result["run"]["total_seconds"] = round(time.time() - started, 1)
    result["run"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["run"]["command"] = "scripts/chaos " + " ".join(
        argv if argv is not None else sys.argv[1:])
    print(json.dumps(result), flush=True)
    print()
    print(table(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
