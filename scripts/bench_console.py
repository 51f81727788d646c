"""The console's page views at size, for scripts/bench's `console` scenario.

On the `inbox` scenario's data (bench_inbox.py: 100,000 chats, a chat of
10,000 messages), `outbox serve`'s app on loopback (uvicorn in a thread),
signed in as an admin of that workspace with the session cookie. A page
view is what a browser asks for, in order: the page, then the API calls
its script makes:

    inbox   GET /, GET /v1/sessions/current, GET /v1/chats?limit=30
    thread  GET /chats/{id}, GET /v1/sessions/current, GET /v1/chats?limit=30,
            GET /v1/chats/{id}, GET /v1/chats/{id}/messages?limit=50

Timed by the client over loopback (so an upper bound of server time), after
a warm-up; p50/p95 per page view and per request.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from typing import Any

import httpx
import uvicorn
from bench_inbox import WORKSPACE, _md5_uuid
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.admin.sessions import sign_in
from outbox.admin.users import create_user

TARGET_P95_MS = 100.0
PASSWORD = "bench console password"  # noqa: S105 (a throwaway user)


def measure(url: str, engine: Engine, encryption_key: str, *, samples: int) -> dict[str, Any]:
    from outbox.api import create_app
    from outbox.settings import Settings

    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    with Session(engine) as s, s.begin():
        create_user(s, workspace_id=WORKSPACE, email=email, role="admin", password=PASSWORD)
        token = sign_in(s, workspace_id=WORKSPACE, email=email, password=PASSWORD).token
    with engine.connect() as conn:
        listed = conn.execute(text("SELECT count(*) FROM outbox.chats WHERE workspace_id = :w"),
                              {"w": WORKSPACE}).scalar_one()
    chat = _md5_uuid("ih0")
    app = create_app(Settings(database_url=url, encryption_key=encryption_key,
                              api_rate_limit_per_second=0, db_pool_size=4))
    pages = {
        "inbox": ["/", "/v1/sessions/current", "/v1/chats?limit=30"],
        "thread": [f"/chats/{chat}", "/v1/sessions/current", "/v1/chats?limit=30",
                   f"/v1/chats/{chat}", f"/v1/chats/{chat}/messages?limit=50"],
    }
    with _serve(app) as base, httpx.Client(base_url=base, trust_env=False, timeout=30,
                                           cookies={"outbox_session": token}) as client:
        results = {name: _time_page(client, paths, samples) for name, paths in pages.items()}
    return {"chats": listed, "samples": samples, "target_p95_ms": TARGET_P95_MS,
            "pages": results,
            "meets_target": all(r["p95_ms"] <= TARGET_P95_MS for r in results.values())}


def _time_page(client: httpx.Client, paths: list[str], samples: int) -> dict[str, Any]:
    views: list[float] = []
    per: dict[str, list[float]] = {p: [] for p in paths}
    for i in range(samples + 10):
        total = 0.0
        for path in paths:
            started = time.perf_counter()
            r = client.get(path)
            took = (time.perf_counter() - started) * 1000
            if r.status_code != 200:
                raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:200]}")
            total += took
            if i >= 10:
                per[path].append(took)
        if i >= 10:
            views.append(total)
    return {"p50_ms": round(statistics.median(views), 1), "p95_ms": round(_p95(views), 1),
            "requests": {p: {"p50_ms": round(statistics.median(t), 1),
                             "p95_ms": round(_p95(t), 1)} for p, t in per.items()}}


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


class _serve:
    """uvicorn on a free loopback port in a thread, for the with-block."""

    def __init__(self, app: Any) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_config=None, access_log=False,
                                                    lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
