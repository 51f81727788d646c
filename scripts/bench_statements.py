"""The `statements` half of scripts/bench: CLAIM and COMPLETE alone.

No HTTP: one psycopg connection claims a batch, completes it as sent, and
claims the next, until a 20,000-row queue is empty. Per message it reports
wall time, this process's CPU and the PostgreSQL backend's CPU, for:

* prepared: psycopg's automatic server-side prepared statements (what the
  dispatcher runs, db/direct.py);
* unprepared: every statement parsed and planned again;
* generic plan: prepared, with `plan_cache_mode = force_generic_plan`;
* pipeline: each completion sent together with the next claim in one
  pipeline (psycopg's pipeline mode), so the two cost one round trip;
* batch sizes 25 to 200 (prepared).

The dispatcher claims and completes on two connections at once, so
pipelining the two is not how it runs; this measures what it would save.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from outbox.db import queries
from outbox.db.driver_sql import driver_sql

CLAIM = driver_sql(queries.CLAIM)
COMPLETE = driver_sql(queries.COMPLETE)

# (name, batch size, prepare, generic plans, pipeline)
MODES: tuple[tuple[str, int, bool, bool, bool], ...] = (
    ("prepared", 50, True, False, False),
    ("unprepared", 50, False, False, False),
    ("generic_plan", 50, True, True, False),
    ("pipeline", 50, True, False, True),
    ("batch_25", 25, True, False, False),
    ("batch_100", 100, True, False, False),
    ("batch_200", 200, True, False, False),
)


def _claim_params(batch: int) -> dict[str, Any]:
    return {"per_channel": batch, "batch_size": batch, "claim_token": uuid.uuid4(),
            "lease_seconds": 60.0}


def _complete_params(rows: list[tuple[Any, ...]], token: uuid.UUID) -> dict[str, Any]:
    n = len(rows)
    return {"ids": [r[0] for r in rows], "claim_tokens": [token] * n, "statuses": ["sent"] * n,
            "refunds": [0] * n, "delays": [0.0] * n, "errors": [None] * n,
            "wa_message_ids": [f"wamid.{r[0]}" for r in rows]}


async def _drain(conninfo: str, batch: int, prepare: bool, generic: bool, pipeline: bool,
                 process_cpu: Callable[[int], float]) -> tuple[int, float, float, float]:
    if generic:
        conninfo = make_conninfo(conninfo, options="-c plan_cache_mode=force_generic_plan")
    conn = await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, prepare_threshold=5 if prepare else None)
    try:
        pid = conn.info.backend_pid
        pg0, cpu0, t0 = process_cpu(pid), time.process_time(), time.perf_counter()
        claimed = 0
        params = _claim_params(batch)
        rows = await (await conn.execute(CLAIM, params)).fetchall()
        while rows:
            claimed += len(rows)
            token, params = params["claim_token"], _claim_params(batch)
            if pipeline:
                async with conn.pipeline():
                    done, nxt = conn.cursor(), conn.cursor()
                    await done.execute(COMPLETE, _complete_params(rows, token))
                    await nxt.execute(CLAIM, params)
                await done.fetchone()
                rows = await nxt.fetchall()
            else:
                await (await conn.execute(COMPLETE, _complete_params(rows, token))).fetchone()
                rows = await (await conn.execute(CLAIM, params)).fetchall()
        return (claimed, time.perf_counter() - t0, time.process_time() - cpu0,
                process_cpu(pid) - pg0)
    finally:
        await conn.close()


def measure(conninfo: str, fill: Callable[[int, str], object], *, messages: int,
            rounds: int, process_cpu: Callable[[int], float]) -> dict[str, Any]:
    """Each mode `rounds` times, modes interleaved; medians per message (µs).
    `process_cpu(pid)` reads a process's CPU seconds (the backend's)."""
    samples: dict[str, list[tuple[float, float, float]]] = {m[0]: [] for m in MODES}
    for r in range(rounds):
        for name, batch, prepare, generic, pipeline in MODES:
            fill(messages, f"st{r}{name}")
            n, wall, cpu, pg = asyncio.run(_drain(conninfo, batch, prepare, generic, pipeline,
                                                    process_cpu))
            if n != messages:
                raise RuntimeError(f"statements/{name}: claimed {n} of {messages}")
            samples[name].append((1e6 * wall / n, 1e6 * cpu / n, 1e6 * pg / n))
    out: dict[str, Any] = {}
    for name, batch, prepare, generic, pipeline in MODES:
        wall, cpu, pg = (round(statistics.median(s[i] for s in samples[name]), 1)
                         for i in range(3))
        out[name] = {"batch": batch, "prepared": prepare, "generic_plan": generic,
                     "pipeline": pipeline, "wall_us": wall, "client_cpu_us": cpu,
                     "postgres_cpu_us": pg}
    return out
