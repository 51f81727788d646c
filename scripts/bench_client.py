"""The `ceiling` half of scripts/bench: the dispatcher's HTTP stack alone.

Run as a subprocess by scripts/bench.py (so it is a fresh interpreter, like
a dispatcher process):

    python scripts/bench_client.py --url URL --tokens T1,T2 --requests N \
        --concurrency C --tag TAG

Sends N text messages through `providers.whapi.WhapiClient` (the client the
dispatcher uses, built the way outbox/runtime.py builds it, on the loop a
dispatcher process runs on: outbox/dispatch/eventloop.py) with C requests
in flight, no database, and prints one JSON line: requests/s and outcomes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from outbox.dispatch.eventloop import run as run_loop
from outbox.dispatch.runtime import tune_gc
from outbox.logging import configure_logging
from outbox.providers.base import OutgoingMessage
from outbox.providers.whapi import WhapiClient
from outbox.settings import Settings


async def run(url: str, tokens: list[str], requests: int, concurrency: int,
              tag: str, chats: int) -> dict[str, object]:
    settings = Settings()
    # As the CLI does for a dispatcher: otherwise structlog's default prints
    # every debug line, and the ceiling would measure logging.
    configure_logging(level=settings.log_level)
    tune_gc()  # as a dispatcher process does
    client = WhapiClient(timeout=settings.whapi_timeout_seconds, max_in_flight=concurrency)
    outcomes: Counter[str] = Counter()
    next_i = 0

    async def worker() -> None:
        nonlocal next_i
        while next_i < requests:
            i = next_i
            next_i += 1
            chat = i % chats
            msg = OutgoingMessage(f"1557{chat:07d}@s.whatsapp.net", "text",
                                  {"body": f"{tag}-{i:07d}"})
            result = await client.send(base_url=url, token=tokens[chat % len(tokens)],
                                       message=msg)
            outcomes[str(result.outcome)] += 1

    try:
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    finally:
        await client.aclose()
    return {"requests": requests, "concurrency": concurrency, "seconds": round(seconds, 3),
            "requests_per_s": round(requests / seconds, 1), "outcomes": dict(outcomes)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--tokens", required=True, help="comma-separated bearer tokens")
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--chats", type=int, default=2000)
    p.add_argument("--tag", default="ceiling")
    a = p.parse_args()
    out = run_loop(run(a.url, a.tokens.split(","), a.requests, a.concurrency, a.tag, a.chats))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
