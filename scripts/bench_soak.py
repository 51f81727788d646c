"""The `soak` scenario of scripts/bench: sustained mixed load on the real
processes, enqueue-to-sent latency minute by minute.

For `minutes` (10 unless --minutes): `outbox serve` takes 40 POST
/v1/messages a second, the bench process enqueues 200 with `enqueue_many`
every 5 s, one `outbox run` daemon sends them to the simulator (200 +- 50 ms
a request, 2% 503s; the retry backoff starts at 1 s so a retried message
shows up in p99 as a retry, not as a minute of backoff). Then the load
stops and the daemon drains.

Reported per minute of enqueue: messages, enqueue-to-sent p50/p99 (the
database's created_at to sent_at), the most rows queued at once, and
outbox_messages' dead rows at the minute's end; overall: the last minute's
p50 over the first's (target: within 2x), lost and duplicated messages
(the simulator's record), VACUUM/ANALYZE runs on outbox_messages, and the
daemon's peak RSS and CPU.

The hot tables (HOT_TABLES: outbox_messages, messages, chats) run with
`autovacuum_enabled = false` for the soak and are reset afterwards, so the
scenario is the one the daemon's analyzer is for (autovacuum never looks
after them) on any server, whatever its own `autovacuum` setting, which is
reported too. `--soak-without-analyzer` holds
the analyzer's advisory lock for the whole run, so the daemon's analyzer
skips every pass: the same soak as before it existed.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from typing import Any

import httpx
import psycopg
from sqlalchemy import text
from sqlalchemy.orm import Session

from outbox.db.table_stats_queries import HOT_TABLES
from outbox.enqueue import enqueue_many
from outbox.message_types import TextMessage

API_PER_SECOND = 40.0
API_THREADS = 4
BATCH = 200
BATCH_EVERY_SECONDS = 5.0
SAMPLE_EVERY_SECONDS = 5.0
DRAIN_TIMEOUT_SECONDS = 300.0
TARGET_LAST_OVER_FIRST = 2.0

PER_MINUTE = """
SELECT floor(extract(epoch FROM created_at - :t0) / 60)::int AS minute,
       count(*) AS messages,
       count(*) FILTER (WHERE status = 'sent') AS sent,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at))
           AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - created_at))
           AS p99
FROM outbox.outbox_messages
WHERE created_at >= :t0
GROUP BY 1 ORDER BY 1
"""

TABLE_COUNTS = """
SELECT n_dead_tup, n_live_tup,
       analyze_count + autoanalyze_count AS analyzed, vacuum_count + autovacuum_count AS vacuumed
FROM pg_stat_user_tables WHERE relid = 'outbox.outbox_messages'::regclass
"""


def soak(bench: Any, *, minutes: float, without_analyzer: bool, child: Any) -> dict[str, Any]:
    """`bench`: scripts/bench.py's Bench; `child`: its Child (a process we wait4)."""
    from outbox.admin.apikeys import create_api_key

    bench.reset_queue()
    bench.ctl.reset()
    bench.ctl.set_faults(latency_ms=200, latency_jitter_ms=50, error_rate=0.02,
                         error_status=503)
    with Session(bench.engine) as s, s.begin():
        key = create_api_key(s, workspace_id="default").key
    with bench.engine.connect() as conn:
        autovacuum = conn.execute(text("SHOW autovacuum")).scalar_one()
        counts0 = conn.execute(text(TABLE_COUNTS)).one()
    _set_autovacuum(bench, enabled=False)
    try:
        out = _soak(bench, minutes=minutes, without_analyzer=without_analyzer, child=child,
                    key=key, counts0=counts0)
    finally:
        _set_autovacuum(bench, enabled=True)
    return {"autovacuum": autovacuum, "tables_autovacuum": "off for the run", **out}


def _set_autovacuum(bench: Any, *, enabled: bool) -> None:
    """Autovacuum off for the hot tables (their own setting), or back to the server's."""
    with bench.engine.begin() as conn:
        for table in HOT_TABLES:
            conn.execute(text(f"ALTER TABLE outbox.{table} "
                              + ("RESET (autovacuum_enabled)" if enabled
                                 else "SET (autovacuum_enabled = false)")))


def _soak(bench: Any, *, minutes: float, without_analyzer: bool, child: Any, key: str,
          counts0: Any) -> dict[str, Any]:
    from outbox.maintenance.analyzer import ANALYZER_LOCK_KEY

    blocker = None
    if without_analyzer:
        blocker = psycopg.connect(bench.conninfo, autocommit=True)
        blocker.execute("SELECT pg_advisory_lock(%s)", (ANALYZER_LOCK_KEY,))

    port = unused_port()
    serve = child([sys.executable, "-m", "outbox", "serve", "--port", str(port)],
                  bench.dispatcher_env(api_rate_limit_per_second=0, db_pool_size=8))
    daemon = child([sys.executable, "-m", "outbox", "run"],
                   bench.dispatcher_env(backoff_base_seconds=1, backoff_cap_seconds=10,
                                        log_level="INFO"))
    base = f"http://127.0.0.1:{port}"
    _wait_up(base)

    stop = threading.Event()
    lock = threading.Lock()
    tally = {"api_created": 0, "api_errors": 0, "batched": 0}
    samples: list[dict[str, Any]] = []
    with bench.engine.connect() as conn:
        t0 = conn.execute(text("SELECT now()")).scalar_one()
    started = time.monotonic()
    channels = [c for c, _ in bench.channels]

    def api_load(worker: int) -> None:
        rate = API_PER_SECOND / API_THREADS
        n = 0
        with httpx.Client(base_url=base, timeout=30, trust_env=False) as client:
            while not stop.is_set():
                due = started + n / rate
                if (wait := due - time.monotonic()) > 0 and stop.wait(wait):
                    return
                i = n * API_THREADS + worker
                r = client.post("/v1/messages", headers={"Authorization": f"Bearer {key}"},
                                json={"channel_id": str(channels[i % len(channels)]),
                                      "to": f"+1556{4000000 + i % 1000:07d}",
                                      "text": f"soak-api-{worker}-{n:07d}"})
                with lock:
                    tally["api_created" if r.status_code == 201 else "api_errors"] += 1
                n += 1

    def batch_load() -> None:
        k = 0
        while not stop.is_set():
            plan = [TextMessage(channels[(k * BATCH + j) % len(channels)],
                                f"+1555{3000000 + (k * BATCH + j) % 2000:07d}",
                                f"soak-batch-{k:05d}-{j:03d}") for j in range(BATCH)]
            with Session(bench.engine) as s, s.begin():
                enqueue_many(s, plan)
            with lock:
                tally["batched"] += BATCH
            k += 1
            if stop.wait(max(0.0, started + k * BATCH_EVERY_SECONDS - time.monotonic())):
                return

    def sampler() -> None:
        with psycopg.connect(bench.conninfo, autocommit=True) as conn:
            while True:
                queued = conn.execute("SELECT count(*) FILTER (WHERE status = 'queued'), "
                                      "count(*) FILTER (WHERE status = 'sending') "
                                      "FROM outbox.outbox_messages "
                                      "WHERE status IN ('queued', 'sending')").fetchone()
                dead = conn.execute(TABLE_COUNTS).fetchone()
                samples.append({"t": time.monotonic() - started, "queued": queued[0],  # type: ignore[index]
                                "sending": queued[1], "dead_rows": dead[0]})  # type: ignore[index]
                if stop.wait(SAMPLE_EVERY_SECONDS) and samples[-1]["t"] > minutes * 60:
                    return

    threads = [threading.Thread(target=api_load, args=(w,), daemon=True)
               for w in range(API_THREADS)]
    threads += [threading.Thread(target=batch_load, daemon=True)]
    sample_thread = threading.Thread(target=sampler, daemon=True)
    for t in [*threads, sample_thread]:
        t.start()
    try:
        time.sleep(minutes * 60)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    drain_started = time.monotonic()
    while time.monotonic() - drain_started < DRAIN_TIMEOUT_SECONDS:
        if not sum(bench.outbox_counts().get(s, 0) for s in ("queued", "sending")):
            break
        time.sleep(1)
    drain_seconds = time.monotonic() - drain_started
    sample_thread.join(timeout=30)
    serve.proc.send_signal(signal.SIGTERM)
    daemon.proc.send_signal(signal.SIGTERM)
    daemon_run = daemon.wait(120)
    serve.wait(120)
    if blocker is not None:
        blocker.close()

    with bench.engine.connect() as conn:
        rows = conn.execute(text(PER_MINUTE), {"t0": t0}).all()
        counts1 = conn.execute(text(TABLE_COUNTS)).one()
    per_minute = []
    for r in rows:
        if r.minute >= minutes:  # the last requests' stragglers
            continue
        in_minute = [x for x in samples if r.minute * 60 <= x["t"] < (r.minute + 1) * 60]
        per_minute.append({
            "minute": r.minute + 1, "messages": r.messages, "sent": r.sent,
            "p50_s": round(float(r.p50), 3) if r.p50 is not None else None,
            "p99_s": round(float(r.p99), 3) if r.p99 is not None else None,
            "max_queued": max((x["queued"] for x in in_minute), default=None),
            "dead_rows_end": in_minute[-1]["dead_rows"] if in_minute else None,
        })
    enqueued = tally["api_created"] + tally["batched"]
    sim = bench.sim_report()
    counts = bench.outbox_counts()
    if not per_minute:
        raise RuntimeError("the soak sent nothing: see the processes' errors above")
    first, last = per_minute[0]["p50_s"], per_minute[-1]["p50_s"]
    ratio = round(last / first, 2) if first and last else None
    lines = daemon_run["stderr"].splitlines()
    out = {
        "minutes": minutes, "analyzer": not without_analyzer,
        "load": {"api_per_s": API_PER_SECOND, "enqueue_many": BATCH,
                 "every_s": BATCH_EVERY_SECONDS, "provider_ms": "150-250", "errors_503": 0.02},
        "enqueued": enqueued, "api_errors": tally["api_errors"],
        "per_minute": per_minute,
        "p50_last_over_first": ratio,
        "drain_s": round(drain_seconds, 1),
        "outbox": counts,
        "lost": enqueued - sim["unique_bodies"] - counts.get("failed", 0),
        "duplicates": sim["duplicate_bodies"],
        "outbox_messages": {"analyzed": counts1.analyzed - counts0.analyzed,
                            "vacuumed": counts1.vacuumed - counts0.vacuumed,
                            "dead_rows_end": counts1.n_dead_tup},
        "daemon": {"peak_rss_mb": daemon_run["peak_rss_mb"], "cpu_s": daemon_run["cpu_s"],
                   "table_maintained_lines": sum("table_maintained" in x for x in lines)},
        "target": TARGET_LAST_OVER_FIRST,
    }
    out["meets_target"] = bool(ratio is not None and ratio <= TARGET_LAST_OVER_FIRST
                               and out["lost"] == 0 and out["duplicates"] == 0)
    bench.ctl.reset()
    return out


def _wait_up(base: str) -> None:
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=base, timeout=5, trust_env=False) as client:
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("outbox serve did not come up")
            time.sleep(0.2)


def summary(r: dict[str, Any]) -> str:
    per = ", ".join(f"{m['p50_s']:.2f}/{m['p99_s']:.2f}" for m in r["per_minute"]
                    if m["p50_s"] is not None)
    return (f"enqueue->sent p50/p99 s per minute: {per}; last/first p50 "
            f"x{r['p50_last_over_first']}; lost {r['lost']}, duplicates {r['duplicates']} "
            f"(autovacuum {r['autovacuum']}, analyzer {'on' if r['analyzer'] else 'off'})")


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
