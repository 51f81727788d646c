"""Shared helpers for dispatcher tests: run a dispatcher, read the simulator."""

from __future__ import annotations

import base64
import contextlib
import gc
import hashlib
import io
import os
import subprocess
import sys
import traceback
import uuid
import warnings
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.dispatch.credentials import CredentialCache
from outbox.dispatch.dispatcher import Dispatcher, DispatcherConfig, Summary
from outbox.enqueue import enqueue_many
from outbox.message_types import TextMessage
from outbox.providers.simulator.control import SentRecord, SimulatorControl
from outbox.providers.whapi import WhapiClient

REPO = Path(__file__).resolve().parent.parent
# 32 bytes in base64, as OUTBOX_ENCRYPTION_KEY must be (fixed: tests only).
TEST_KEY = base64.urlsafe_b64encode(hashlib.sha256(b"whapi-outbox tests").digest()).decode()


async def run_dispatcher(
    database_url: str,
    *,
    http_timeout: float = 5.0,
    limit: int | None = None,
    max_seconds: float | None = 60.0,
    keys: list[str] | None = None,
    **config: object,
) -> Summary:
    from outbox.database import make_async_engine

    engine = make_async_engine(database_url, pool_size=4)
    client = WhapiClient(timeout=http_timeout, connect_attempts=2, connect_retry_wait=0.01)
    try:
        creds = CredentialCache(engine, default_base_url="http://127.0.0.1:9",
                                keys=keys or [TEST_KEY])
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
    from outbox.crypto import Binding, decrypt_token

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT t.channel_id, t.encrypted_token, c.base_url FROM outbox.channel_tokens t "
            "JOIN outbox.channels c ON c.id = t.channel_id")).all()
    return {r.channel_id: decrypt_token(r.encrypted_token, TEST_KEY,
                                        Binding(r.channel_id, r.base_url)) for r in rows}


def webhook_secrets(engine: Engine) -> dict[uuid.UUID, str]:
    """Every channel's webhook secret in the clear (stored encrypted)."""
    from outbox.admin.channels import webhook_secret_of

    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT id, webhook_secret, base_url FROM outbox.channels")).all()
    return {r.id: webhook_secret_of(r.id, r.webhook_secret, r.base_url, [TEST_KEY])
            for r in rows}


def store_webhook_secret(engine: Engine, channel_id: uuid.UUID, secret: str, *,
                         in_clear: bool = False) -> None:
    """Overwrite a channel's stored webhook secret: encrypted with TEST_KEY as
    `channel add` writes it, or in the clear (versions before 0.2, or someone
    writing to the database)."""
    from outbox.admin.channels import WEBHOOK_SECRET
    from outbox.crypto import Binding, encrypt_token

    with engine.begin() as conn:
        base_url = conn.execute(text("SELECT base_url FROM outbox.channels WHERE id = :id"),
                                {"id": channel_id}).scalar_one()
        stored = secret if in_clear else encrypt_token(
            secret, TEST_KEY, Binding(channel_id, base_url, purpose=WEBHOOK_SECRET))
        conn.execute(text("UPDATE outbox.channels SET webhook_secret = :s WHERE id = :id"),
                     {"s": stored, "id": channel_id})


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


def cli(*args: str, env: dict[str, str] | None = None, input: str | None = None,
        separate_process: bool = False, timeout: float = 120,
        ) -> subprocess.CompletedProcess[str]:
    """`outbox *args` with `env` added to the environment and `input` on stdin.

    In this process by default: `main(argv)` with streams of its own and the
    settings read afresh, as a new process would see them, but without the
    interpreter start and imports each time. `separate_process=True` runs
    `python -m outbox` instead, for what only a process shows (the entry
    point, a real exit status, signals).
    """
    if separate_process:
        return subprocess.run(
            [sys.executable, "-m", "outbox", *args], capture_output=True, text=True,
            timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO, input=input,
        )
    return _cli_in_process(list(args), env or {}, input)


def _cli_in_process(argv: list[str], env: dict[str, str],
                    input: str | None) -> subprocess.CompletedProcess[str]:
    from outbox.cli import main

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_environment(env))
        stack.enter_context(contextlib.chdir(REPO))
        stack.enter_context(_process_state())
        stack.enter_context(_stdin(io.StringIO(input or "")))
        stack.enter_context(contextlib.redirect_stdout(stdout))
        stack.enter_context(contextlib.redirect_stderr(stderr))
        stack.enter_context(_warnings_to_stderr())
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: --help, bad arguments
            code = _exit_status(exc.code)
        except Exception:
            # What the interpreter does with an uncaught exception.
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["outbox", *argv], code, stdout.getvalue(),
                                       stderr.getvalue())


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


@contextlib.contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _process_state() -> Iterator[None]:
    """Undo what a command sets up once per process: the cached settings,
    the logging configuration, the collector thresholds (dispatch)."""
    import structlog

    from outbox.logging import _unconfigure
    from outbox.settings import get_settings

    logging_was_configured = structlog.is_configured()
    thresholds = gc.get_threshold()
    get_settings.cache_clear()
    try:
        yield
    finally:
        get_settings.cache_clear()
        if not logging_was_configured:
            _unconfigure()
        gc.set_threshold(*thresholds)


@contextlib.contextmanager
def _stdin(stream: io.StringIO) -> Iterator[None]:
    saved, sys.stdin = sys.stdin, stream
    try:
        yield
    finally:
        sys.stdin = saved


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Warnings on the command's stderr under the interpreter's default
    filters (pytest would collect them instead), so "one line on stderr"
    still means one line."""
    with warnings.catch_warnings():
        warnings.resetwarnings()
        for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                         ResourceWarning):
            warnings.simplefilter("ignore", category)
        warnings.showwarning = _show_warning
        yield


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
