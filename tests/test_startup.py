"""What `outbox dispatch --once` loads: a cron pass starts a fresh
interpreter every time, so the dispatch path imports only what dispatching
needs. Not SQLAlchemy (its statements run on psycopg connections of their
own), the HTTP service (FastAPI, Starlette, uvicorn), the API's
schemas, the console, Prometheus' exposition, phone parsing, the admin
services, tqdm when stderr is not a terminal; and, with nothing due, not
the HTTP client either. Checked in a process of its own, after a real run,
on what `sys.modules` holds (how long it takes is scripts/bench's business:
`--only peers` reports the empty-queue start)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from sqlalchemy import Engine

from tests.dispatch_helpers import REPO, cli

pytestmark = pytest.mark.slow  # interpreters of their own

# Run `outbox dispatch --once` the way the console script does, then say
# what the interpreter loaded for it.
PROBE = """
import json, sys
from outbox.cli import main
code = main(["dispatch", "--once", "--json", "--no-progress"])
sys.stderr.write(json.dumps({"code": code, "modules": sorted(sys.modules)}) + "\\n")
"""

NEVER = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "prometheus_client",
         "phonenumbers", "tqdm",
         "apscheduler", "argon2", "outbox.api", "outbox.admin", "outbox.enqueue",
         "outbox.phone", "outbox.metrics", "outbox.webhooks", "outbox.dispatch.daemon",
         "outbox.dispatch.progress", "outbox.providers.simulator")
HTTP_CLIENT = ("httpx", "aiohttp", "tenacity", "outbox.providers.whapi")


def _dispatch_once_modules() -> tuple[dict[str, object], set[str]]:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), set(report["modules"])


def _loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m in packages or m.startswith(
        tuple(p + "." for p in packages)))


def test_an_empty_pass_loads_neither_the_service_nor_the_http_client(clean_db: Engine) -> None:
    summary, modules = _dispatch_once_modules()
    assert summary["claimed"] == 0
    assert "outbox.dispatch.dispatcher" in modules  # it did run the dispatch path
    assert _loaded(modules, NEVER) == []
    assert _loaded(modules, HTTP_CLIENT) == []


def test_a_pass_that_sends_loads_the_client_and_still_not_the_service(
        clean_db: Engine, sim, sim_url: str) -> None:  # type: ignore[no-untyped-def]
    added = cli("channel", "add", "--name", "shop", "--phone", "+15550001111", "--token-stdin",
                "--base-url", sim_url, input=secrets.token_hex(16) + "\n")
    assert added.returncode == 0, added.stderr
    sent = cli("send", "--channel", added.stdout.strip(), "--to", "+15550002222",
               "--text", "hello")
    assert sent.returncode == 0, sent.stderr

    summary, modules = _dispatch_once_modules()
    assert summary["sent"] == 1 and len(sim.sent()) == 1
    assert "outbox.providers.whapi" in modules
    assert _loaded(modules, NEVER) == []
