"""The demo behind `scripts/demo`: the whole path on this machine.

Embedded PostgreSQL (or OUTBOX_DATABASE_URL), the Whapi simulator on
loopback, a few channels, a few thousand messages over many chats, one
channel rate-limited part-way (the simulator answers 429 beyond N/s), the
dispatcher daemon with a progress bar, a status-callback receiver printing
the signed callbacks it gets meanwhile (scripts/callback_receiver.py), then
`outbox status`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEMO_DATABASE = "outbox_demo"
DEMO_ADMIN = "admin@demo.example"
RATE_LIMIT_SECONDS = 4.0
CALLBACKS_PRINTED = 6  # then a count: thousands of lines would bury the rest
CALLBACK_TYPES = ["message.sent", "message.failed", "channel.paused", "channel.resumed"]


def main() -> int:
    parser = argparse.ArgumentParser(description="whapi-outbox demo")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--chats", type=int, default=400)
    parser.add_argument("--smoke", action="store_true", help="small and quick (CI)")
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.channels, args.chats = 400, 3, 60

    # Demo-friendly knobs (all ordinary settings): short rate-limit pauses so
    # the limited channel recovers within the demo.
    # A fixed key for the demo's own throwaway data (32 bytes in base64).
    os.environ.setdefault("OUTBOX_ENCRYPTION_KEY", "ZGVtby1vbmx5LWtleS1ub3Qtc2VjcmV0LTMyYnl0ZXM=")
    os.environ.setdefault("OUTBOX_RATE_LIMIT_PAUSE_SECONDS", "1")
    os.environ.setdefault("OUTBOX_LOG_LEVEL", "ERROR")

    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from outbox.admin.channels import create_channel
    from outbox.admin.endpoints import add_endpoint
    from outbox.database import make_engine
    from outbox.enqueue import enqueue_many
    from outbox.logging import configure_logging
    from outbox.message_types import TextMessage
    from outbox.migrate import upgrade
    from outbox.providers.simulator.control import start_simulator
    from outbox.settings import get_settings

    settings = get_settings()
    configure_logging(level=settings.log_level)
    url = _demo_database_url(settings)
    os.environ["OUTBOX_DATABASE_URL"] = url  # so `outbox status` below reads the same one
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(url)
    engine = make_engine(url)

    from tqdm import tqdm

    from scripts.callback_receiver import CallbackReceiver, describe

    printed = [0]

    def show(event: dict, ok: bool) -> None:  # type: ignore[type-arg]
        # Every channel event, and the first few messages: the rest are counted.
        if event["type"].startswith("channel.") or printed[0] < CALLBACKS_PRINTED:
            printed[0] += event["type"].startswith("message.")
            # Above the progress bar, not through it.
            tqdm.write(f"  callback evt_{event['id']}: signature ok, {describe(event)}")

    with start_simulator() as sim, CallbackReceiver(show=show) as receiver:
        control = sim.control()
        print(f"Whapi simulator: {sim.url}")
        tokens = [secrets.token_hex(16) for _ in range(args.channels)]
        with Session(engine) as s, s.begin():
            channels = [
                create_channel(s, name=f"shop-{i + 1}", phone_number=f"+1555000{1000 + i}",
                               token=tokens[i], base_url=sim.url,
                               encryption_key=settings.require_encryption_key())
                for i in range(args.channels)
            ]
            endpoint = add_endpoint(s, workspace_id="default", url=receiver.url,
                                    event_types=CALLBACK_TYPES,
                                    encryption_key=settings.require_encryption_key())
        receiver.secret = endpoint.secret
        print(f"Status callbacks: {', '.join(CALLBACK_TYPES)} to {receiver.url}, "
              "signed (Standard Webhooks); the receiver checks every signature.")
        # A provider that takes its time, and channel 1 rate-limited for the
        # first seconds: 429 with Retry-After, so the channel pauses and resumes.
        control.set_faults(latency_ms=20, latency_jitter_ms=30)
        control.set_faults(token=tokens[0], error_status=429, retry_after=2)
        threading.Timer(RATE_LIMIT_SECONDS, control.clear_faults,
                        kwargs={"token": tokens[0]}).start()

        rng = random.Random(7)
        phones = [f"+1555{2000000 + i:07d}" for i in range(args.chats)]
        t0 = time.perf_counter()
        with Session(engine) as s, s.begin():
            enqueue_many(s, [
                TextMessage(channels[rng.randrange(args.channels)].id, rng.choice(phones),
                            f"Your order #{10000 + n} has shipped")
                for n in range(args.messages)
            ])
        took = time.perf_counter() - t0
        print(f"Enqueued {args.messages:,} messages over {args.channels} channels and "
              f"{args.chats} chats in one transaction ({args.messages / took:,.0f} msg/s).")
        print(f"Channel {channels[0].name} answers 429 (Retry-After: 2) for the first "
              f"{RATE_LIMIT_SECONDS:.0f}s; the other channels keep flowing.")

        elapsed = asyncio.run(_dispatch_all(settings, args.messages, receiver))
        stats = control.stats()
        print(f"\nDispatcher daemon drained the queue in {elapsed:.1f}s.")
        print(f"Simulator: {stats.accepted:,} messages accepted, "
              f"{stats.rejected.get(429, 0):,} answered 429 (the channel paused, then resumed; "
              "no attempt spent).")
        unique = len({r.body for r in control.sent()})
        print(f"Unique messages delivered to the simulator: {unique:,} of {args.messages:,}")
        with engine.connect() as conn:
            spent = conn.execute(text(
                "SELECT count(*) FROM outbox.outbox_messages WHERE attempts > 1")).scalar_one()
        print(f"Rows that spent more than one attempt: {spent} (429s don't spend attempts)")
        print(f"Callbacks received: {sum(receiver.by_type.values()):,} "
              f"({', '.join(f'{n:,} {t}' for t, n in sorted(receiver.by_type.items()))}); "
              f"bad signatures: {receiver.bad_signatures}; replays deduped: {receiver.replays}")
        control.close()
    password = _console_admin(engine)
    engine.dispose()

    print("\n$ outbox status")
    from outbox.cli import main as outbox_main

    status = outbox_main(["status"])
    print("\nThe web console (the inbox and the operations view) on this data:\n"
          f"  OUTBOX_DATABASE_URL='{_shown(url)}' \\\n"
          f"  OUTBOX_ENCRYPTION_KEY='{settings.require_encryption_key()}' \\\n"
          "  .venv/bin/outbox serve\n"
          "  then open http://127.0.0.1:8080/ and sign in as "
          f"{DEMO_ADMIN} with password {password}")
    return status


def _shown(url: str) -> str:
    """The URL with its password (if any) masked: the terminal may be shared."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _console_admin(engine) -> str:  # type: ignore[no-untyped-def]
    """An admin of the demo's workspace, with a fresh password (the database is new)."""
    from sqlalchemy.orm import Session

    from outbox.admin.users import create_user

    password = secrets.token_urlsafe(12)
    with Session(engine) as s, s.begin():
        create_user(s, workspace_id="default", email=DEMO_ADMIN, role="admin",
                    password=password)
    return password


async def _dispatch_all(settings, total: int, receiver) -> float:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    from outbox.dispatch.daemon import Daemon
    from outbox.dispatch.progress import progress_observer
    from outbox.dispatch.runtime import open_runtime

    started = time.perf_counter()
    async with open_runtime(settings) as runtime:
        with progress_observer(total, desc="sending", enabled=True) as observer:
            daemon = Daemon(runtime, observers=[observer])
            task = asyncio.create_task(daemon.run())
            while True:
                await asyncio.sleep(0.5)
                async with runtime.engine.connect() as conn:
                    left = (await conn.execute(text(
                        "SELECT count(*) FROM outbox.outbox_messages WHERE status IN "
                        "('queued', 'sending')"))).scalar_one()
                if left == 0 or task.done():
                    break
            # The callbacks follow the sends: wait for the last message.sent.
            deadline = time.monotonic() + 30
            while (receiver.count("message.sent") < total  # noqa: ASYNC110  (another thread's)
                   and time.monotonic() < deadline):
                await asyncio.sleep(0.2)
            daemon.request_stop()
            await task
    return time.perf_counter() - started


def _demo_database_url(settings) -> str:  # type: ignore[no-untyped-def]
    """A fresh demo database each run, on the embedded server or OUTBOX_DATABASE_URL's."""
    from outbox.database import normalize_url
    from outbox.db.admin import create_database
    from outbox.db.embedded import embedded_server_url

    if settings.database_url and settings.database_url.get_secret_value():
        server = normalize_url(settings.database_url)
        print("database: OUTBOX_DATABASE_URL's server, database outbox_demo (recreated)")
    else:
        server = embedded_server_url(settings.data_dir, database="postgres")
        print(f"database: embedded PostgreSQL in {settings.data_dir}/pgdata, "
              "database outbox_demo (recreated)")
    return create_database(server, DEMO_DATABASE, replace=True)


if __name__ == "__main__":
    sys.exit(main())
