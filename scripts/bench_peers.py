"""The `peers` half of scripts/bench: whapi-outbox next to a generic queue.

Three ways to send N text messages, one channel, every message to its own
recipient, against one minimal fake API (raw ASGI on uvicorn with uvloop and
httptools, answering `{"sent": true, "message": {"id": ...}}` after an
optional delay):

* raw aiohttp: N POSTs with C in flight and no database, the ceiling;
* PgQueuer (asyncpg driver, aiohttp client): N jobs queued beforehand, one
  worker in its drain mode (`QueueExecutionMode.drain`, batch 32, at most C
  jobs at once) sends them and exits;
* whapi-outbox: N messages queued with enqueue_many, one
  `outbox dispatch --once` process with OUTBOX_CONCURRENCY =
  OUTBOX_CHANNEL_CONCURRENCY = C, timed from process start to exit.

Each runs in its own process, started by scripts/bench.py:

    python scripts/bench_peers.py fakeapi --port P --latency-ms L
    python scripts/bench_peers.py aiohttp --url URL --n N --concurrency C
    python scripts/bench_peers.py pgqueuer --dsn DSN --url URL --n N --concurrency C

The children print one JSON line. Needs the `bench` extra
(pip install -e '.[bench]'): pgqueuer (which brings uvloop); asyncpg,
aiohttp, uvicorn and httptools come with the runtime or test dependencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

TOKEN = "peers-bench-token"  # noqa: S105 - the fake API checks nothing
ENTRYPOINT = "send_text"
PGQ_BATCH = 32


def recipient(i: int) -> str:
    return f"1556{i:07d}@s.whatsapp.net"


def text_body(i: int, tag: str) -> bytes:
    return json.dumps({"to": recipient(i), "body": f"{tag}-{i:07d}"}).encode()


# --- the fake API ---------------------------------------------------------------------


def make_app(latency_s: float) -> Any:
    """A raw ASGI app: POST anything -> 200 {"sent": true, "message": {...}};
    GET /count -> how many POSTs it answered (and resets with ?reset=1)."""
    state = {"count": 0}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["method"] == "GET":
            body = json.dumps({"count": state["count"]}).encode()
            if scope.get("query_string") == b"reset=1":
                state["count"] = 0
        else:
            more = True
            while more:
                msg = await receive()
                more = msg.get("more_body", False)
            if latency_s:
                await asyncio.sleep(latency_s)
            state["count"] += 1
            body = b'{"sent":true,"message":{"id":"wamid.%d"}}' % state["count"]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def run_fakeapi(port: int, latency_ms: float) -> None:
    import uvicorn

    uvicorn.run(make_app(latency_ms / 1000), host="127.0.0.1", port=port, loop="uvloop",
                http="httptools", lifespan="on", log_level="warning", access_log=False,
                backlog=4096)


# --- raw aiohttp ------------------------------------------------------------------------


async def run_aiohttp(url: str, n: int, concurrency: int) -> dict[str, Any]:
    import aiohttp

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    bodies = [text_body(i, "raw") for i in range(n)]
    ok = 0
    next_i = 0
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def worker() -> None:
            nonlocal ok, next_i
            while next_i < n:
                i = next_i
                next_i += 1
                async with session.post(url, data=bodies[i], headers=headers) as r:
                    data = await r.json()
                    ok += r.status == 200 and data["sent"] is True

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    return {"sent": ok, "seconds": round(seconds, 3), "msgs_per_s": round(n / seconds, 1)}


# --- PgQueuer ---------------------------------------------------------------------------


async def pgqueuer_install(dsn: str) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        if not await queries.schema_is_installed():
            await queries.install()
    finally:
        await conn.close()


async def pgqueuer_enqueue(dsn: str, n: int, tag: str) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.clear_queue()
        for lo in range(0, n, 1000):
            hi = min(n, lo + 1000)
            await queries.enqueue([ENTRYPOINT] * (hi - lo),
                                  [text_body(i, tag) for i in range(lo, hi)],
                                  [0] * (hi - lo))
    finally:
        await conn.close()


async def run_pgqueuer(dsn: str, url: str, n: int, concurrency: int) -> dict[str, Any]:
    """One PgQueuer worker, the way its documentation writes one: an
    asyncpg connection, an entrypoint that POSTs the job's payload with a
    shared aiohttp session, `run(mode=drain)`."""
    import aiohttp
    import asyncpg
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    conn = await asyncpg.connect(dsn)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    sent = 0
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        @qm.entrypoint(ENTRYPOINT)
        async def send_text(job: Job) -> None:
            nonlocal sent
            async with session.post(url, data=job.payload, headers=headers) as r:
                data = await r.json()
                if r.status != 200 or data.get("sent") is not True:
                    raise RuntimeError(f"HTTP {r.status}")
            sent += 1

        started = time.perf_counter()
        await qm.run(batch_size=PGQ_BATCH, mode=QueueExecutionMode.drain,
                     max_concurrent_tasks=max(concurrency, 2 * PGQ_BATCH))
        seconds = time.perf_counter() - started
    await conn.close()
    return {"sent": sent, "seconds": round(seconds, 3), "msgs_per_s": round(n / seconds, 1)}


def main() -> int:
    p = argparse.ArgumentParser(prog="bench_peers.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fakeapi")
    f.add_argument("--port", type=int, required=True)
    f.add_argument("--latency-ms", type=float, default=0.0)
    for name in ("aiohttp", "pgqueuer"):
        c = sub.add_parser(name)
        c.add_argument("--url", required=True)
        c.add_argument("--n", type=int, required=True)
        c.add_argument("--concurrency", type=int, required=True)
        if name == "pgqueuer":
            c.add_argument("--dsn", required=True)
    a = p.parse_args()
    if a.cmd == "fakeapi":
        run_fakeapi(a.port, a.latency_ms)
        return 0
    try:
        import uvloop
    except ImportError:
        runner: Any = asyncio.run
    else:
        runner = uvloop.run
    if a.cmd == "aiohttp":
        out = runner(run_aiohttp(a.url, a.n, a.concurrency))
    else:
        out = runner(run_pgqueuer(a.dsn, a.url, a.n, a.concurrency))
    out["pid"] = os.getpid()
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
