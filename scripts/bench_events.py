"""scripts/bench's `events` scenario: the live stream and status callbacks.

Stream: one `outbox serve` process (the Child passed in), `clients` SSE
connections to it (raw asyncio sockets in this process: an HTTP client
library would spend more CPU than the server and measure itself). Then
`transactions` enqueues, one message each, at a steady rate; every client
notes when each event's frame arrives. Latency is from the enqueue's
COMMIT returning to the frame arriving, over every (client, event) pair:
p50/p99. The serve process's RSS is sampled throughout (VmRSS).

Callbacks: one endpoint on a loopback receiver that checks every
signature (scripts/callback_receiver.py), `callbacks` messages enqueued in
batches, then the sender (the one `outbox run` uses) drains them in this
process: deliveries/s from its first claim to the last answer.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from callback_receiver import CallbackReceiver
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.admin.apikeys import create_api_key
from outbox.admin.endpoints import add_endpoint
from outbox.enqueue import enqueue_many, enqueue_text
from outbox.message_types import TextMessage

WORKSPACE = "default"


async def _client(port: int, key: str, arrivals: dict[str, list[float]],
                  ready: asyncio.Event, opened: list[int], total: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**20)
    writer.write((f"GET /v1/events/stream?types=message.queued HTTP/1.1\r\n"
                  f"Host: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                  "Accept: text/event-stream\r\n\r\n").encode())
    await writer.drain()
    try:
        while (line := await reader.readline()) not in (b"\r\n", b""):
            pass  # response headers
        counted = False
        while True:
            line = await reader.readline()
            if not line:
                return
            if not counted and line.startswith(b":"):
                counted = True
                opened[0] += 1
                if opened[0] == total:
                    ready.set()
            elif line.startswith(b"data: "):
                # The id sliced out, not json.loads: a thousand clients in one
                # process must cost less than the server they measure.
                now = time.time()
                at = line.index(b'"message_id": "') + 15
                mid = line[at:at + 36].decode()
                arrivals.setdefault(mid, []).append(now)
    finally:
        writer.close()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _stream(engine: Engine, port: int, pid: int, channel: uuid.UUID, *, clients: int,
                  transactions: int, rate: float) -> dict[str, Any]:
    with Session(engine) as s, s.begin():
        key = create_api_key(s, workspace_id=WORKSPACE, scopes="read").key
    arrivals: dict[str, list[float]] = {}
    ready = asyncio.Event()
    opened = [0]
    rss = [_rss_mb(pid)]
    tasks = [asyncio.create_task(_client(port, key, arrivals, ready, opened, clients))
             for _ in range(clients)]
    try:
        await asyncio.wait_for(ready.wait(), 120)
    except TimeoutError:
        raise RuntimeError(f"only {opened[0]} of {clients} streams opened") from None
    rss.append(_rss_mb(pid))
    committed: dict[str, float] = {}
    cpu0, own0, wall0 = _cpu_s(pid), time.process_time(), time.perf_counter()

    def send(i: int) -> None:
        with Session(engine) as s, s.begin():
            mid = enqueue_text(s, channel_id=channel, to=f"+1556{i % 500:07d}",
                               body=f"e{i}").message_id
        committed[str(mid)] = time.time()

    started = time.perf_counter()
    for i in range(transactions):
        await asyncio.to_thread(send, i)
        rss.append(_rss_mb(pid))
        await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.perf_counter()))
    deadline = time.monotonic() + 30
    while (sum(len(v) for v in arrivals.values()) < clients * transactions  # noqa: ASYNC110
           and time.monotonic() < deadline):
        await asyncio.sleep(0.1)
    rss.append(_rss_mb(pid))
    wall = time.perf_counter() - wall0
    cpu = {"serve_cores": round((_cpu_s(pid) - cpu0) / wall, 2),
           "clients_cores": round((time.process_time() - own0) / wall, 2),
           "load_average": round(os.getloadavg()[0], 2)}
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    latencies = sorted((at - committed[mid]) * 1000 for mid, ats in arrivals.items()
                       if mid in committed for at in ats)
    expected = clients * transactions
    return {
        "clients": clients, "transactions": transactions, "rate_per_s": rate,
        "frames_expected": expected, "frames_received": len(latencies),
        "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(latencies[int(0.99 * (len(latencies) - 1))], 1) if latencies else None,
        "max_ms": round(latencies[-1], 1) if latencies else None,
        "serve_rss_mb": {"idle": round(rss[0], 1), "connected": round(rss[1], 1),
                         "peak": round(max(rss), 1)},
        "cpu": cpu,
    }


async def _callbacks(engine: Engine, database_url: str, key: str, channel: uuid.UUID, *,
                     messages: int) -> dict[str, Any]:
    from outbox.database import make_async_engine
    from outbox.events.callbacks import CallbackSender

    with CallbackReceiver() as receiver:
        with Session(engine) as s, s.begin():
            new = add_endpoint(s, workspace_id=WORKSPACE, url=receiver.url,
                               event_types=["message.queued"], encryption_key=key)
        receiver.secret = new.secret
        for lo in range(0, messages, 1000):
            with Session(engine) as s, s.begin():
                enqueue_many(s, [TextMessage(channel, f"+1557{i % 2000:07d}", f"c{i}")
                                 for i in range(lo, min(messages, lo + 1000))])
        aengine = make_async_engine(database_url, pool_size=2)
        sender = CallbackSender(keys=[key], run_seconds=600)
        try:
            started = time.perf_counter()
            summary = await sender.run_once(aengine)
            elapsed = time.perf_counter() - started
        finally:
            await sender.aclose()
            await aengine.dispose()
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM outbox.webhook_endpoints"))
        return {"messages": messages, "delivered": summary.delivered,
                "received": receiver.count("message.queued"),
                "bad_signatures": receiver.bad_signatures, "seconds": round(elapsed, 2),
                "callbacks_per_s": round(summary.delivered / elapsed, 1)}


def measure_events(engine: Engine, database_url: str, key: str, channel: uuid.UUID, *,
                   start_serve: Callable[[], tuple[int, int, Callable[[], None]]],
                   clients: int, transactions: int, rate: float,
                   callbacks: int) -> dict[str, Any]:
    port, pid, stop = start_serve()
    try:
        stream = asyncio.run(_stream(engine, port, pid, channel, clients=clients,
                                     transactions=transactions, rate=rate))
    finally:
        stop()
    calls = asyncio.run(_callbacks(engine, database_url, key, channel, messages=callbacks))
    return {"stream": stream, "callbacks": calls}
