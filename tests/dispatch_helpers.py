"""Shared helpers for dispatcher tests: run a dispatcher, read the simulator."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.dispatch.credentials import CredentialCache
from outbox.dispatch.dispatcher import Dispatcher, DispatcherConfig, Summary
from outbox.enqueue import enqueue_many
from outbox.message_types import TextMessage
from outbox.providers.simulator.control import SentRecord, SimulatorControl
from outbox.providers.whapi import WhapiClient

REPO = Path(__file__).resolve().parent.parent
TEST_KEY = "test-encryption-key-not-secret-" + "x" * 16


async def run_dispatcher(
    database_url: str,
    *,
    http_timeout: float = 5.0,
    limit: int | None = None,
    max_seconds: float | None = 60.0,
    **config: object,
) -> Summary:
    from outbox.database import make_async_engine

    engine = make_async_engine(database_url, pool_size=4)
    client = WhapiClient(timeout=http_timeout, connect_attempts=2, connect_retry_wait=0.01)
    try:
        creds = CredentialCache(engine, default_base_url="http://127.0.0.1:9", keys=[TEST_KEY])
        cfg = DispatcherConfig(**config)  # type: ignore[arg-type]
        async with Dispatcher(engine, client, creds, cfg) as dispatcher:
            return await dispatcher.drain(limit=limit, max_seconds=max_seconds)
    finally:
        await client.aclose()
        await engine.dispose()


def enqueue_spread(engine: Engine, channels: list[uuid.UUID], *, messages: int,
                   chats: int) -> list[tuple[uuid.UUID, str, str]]:
    """Enqueue `messages` texts round-robin over channels and chats; returns
    (channel, recipient wa id, body) in enqueue order."""
    plan = []
    for n in range(messages):
        ch = channels[n % len(channels)]
        phone = f"+1555{3000000 + (n // len(channels)) % chats:07d}"
        plan.append(TextMessage(ch, phone, f"m{n:06d}"))
    with Session(engine) as s, s.begin():
        enqueue_many(s, plan)
    return [(m.channel_id, f"{m.to[1:]}@s.whatsapp.net", m.body)  # type: ignore[misc]
            for m in plan]


def channel_tokens(engine: Engine) -> dict[uuid.UUID, str]:
    """Decrypt every channel's token (tests only: to match simulator records)."""
    from outbox.crypto import decrypt_token

    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT channel_id, encrypted_token FROM outbox.channel_tokens")).all()
    return {r.channel_id: decrypt_token(r.encrypted_token, TEST_KEY) for r in rows}


def sent_by_body(control: SimulatorControl) -> dict[str, list[SentRecord]]:
    out: dict[str, list[SentRecord]] = defaultdict(list)
    for rec in control.sent():
        out[str(rec.body)].append(rec)
    return out


def order_violations(records: list[SentRecord]) -> int:
    """Per chat, bodies (m000123) must arrive in increasing order."""
    last: dict[tuple[str, str], str] = {}
    bad = 0
    for rec in sorted(records, key=lambda r: r.seq):
        key = (rec.token, rec.to)
        if key in last and str(rec.body) < last[key]:
            bad += 1
        last[key] = str(rec.body)
    return bad


def outbox_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT status, count(*) FROM outbox.outbox_messages GROUP BY status")).all())  # type: ignore[arg-type]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "outbox", *args], capture_output=True, text=True,
        timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO, input=input,
    )
