"""The inbox's reads at size, for scripts/bench's `inbox` scenario.

Loads (in PostgreSQL, generate_series) a workspace of `chats` chats, each
with a named contact, some archived, a quarter assigned, a few without any
message; and one chat with `thread` messages. Then times the service calls
the HTTP routes make (outbox/admin/chats.py), on one pooled connection:
the chat list's first page, a page half-way down, a name search, a number
search, one agent's chats, the thread's latest page and a page half-way
back. p50/p99 over `samples` calls after a warm-up (psycopg prepares a
statement after 5 runs: the timed calls are the steady state), and each
statement's plan (EXPLAIN ANALYZE of what the call ran): sequential scans,
indexes used, rows the plan read.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from bench_data import plan_summary
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session

from outbox.admin.chats import list_chats, thread
from outbox.admin.pages import encode_cursor

WORKSPACE = "inbox-bench"
AGENT = uuid.UUID("00000000-0000-4000-8000-00000000a9e7")

_NAMES = ("Maria", "Mario", "Ana", "Bruno", "Carla", "Diego", "Elena", "Fabio", "Gabi",
          "Hugo", "Ines", "Joao", "Karen", "Luis", "Marta", "Nico", "Olga", "Pedro",
          "Rosa", "Tiago")

_LOAD = """
INSERT INTO outbox.contacts (id, workspace_id, phone, name, is_group)
SELECT md5('ic' || g)::uuid, %(ws)s, '+1557' || lpad(g::text, 7, '0'),
       (%(names)s::text[])[1 + g %% 20] || ' ' || g, false
FROM generate_series(0, %(chats)s - 1) g;

INSERT INTO outbox.chats (id, workspace_id, channel_id, wa_chat_id, contact_id,
                          last_message_at, last_message_preview, unread_count, status,
                          assigned_to)
SELECT md5('ih' || g)::uuid, %(ws)s, %(channel)s, '1557' || lpad(g::text, 7, '0')
       || '@s.whatsapp.net', md5('ic' || g)::uuid,
       CASE WHEN g %% 100 = 99 THEN NULL ELSE now() - make_interval(secs => g) END,
       'hello ' || g, g %% 3, CASE WHEN g %% 10 = 9 THEN 'archived' ELSE 'active' END,
       CASE WHEN g %% 4 = 0 THEN %(agent)s::uuid END
FROM generate_series(0, %(chats)s - 1) g;

INSERT INTO outbox.messages (workspace_id, channel_id, chat_id, direction, type, body, payload,
                             status, wa_message_id, created_at, updated_at, sent_at)
SELECT %(ws)s, %(channel)s, md5('ih0')::uuid,
       CASE WHEN n %% 2 = 0 THEN 'inbound' ELSE 'outbound' END, 'text', 'message ' || n,
       jsonb_build_object('body', 'message ' || n), 'read', 'ib-' || n,
       now() - make_interval(secs => (%(thread)s - n) * 0.01),
       now() - make_interval(secs => (%(thread)s - n) * 0.01),
       now() - make_interval(secs => (%(thread)s - n) * 0.01)
FROM generate_series(1, %(thread)s) n;
"""


def load(conninfo: str, channel_id: uuid.UUID, *, chats: int, thread_messages: int
         ) -> dict[str, Any]:
    started = time.perf_counter()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in _LOAD.split(";\n\n"):
            conn.execute(statement, {"ws": WORKSPACE, "channel": channel_id,  # type: ignore[arg-type]
                                     "names": list(_NAMES), "chats": chats, "agent": AGENT,
                                     "thread": thread_messages})
        conn.execute("VACUUM (ANALYZE) outbox.contacts, outbox.chats, outbox.messages")
    return {"chats": chats, "thread_messages": thread_messages,
            "seconds": round(time.perf_counter() - started, 1)}


def measure(engine: Engine, *, samples: int, chats: int) -> dict[str, Any]:
    thread_chat = uuid.UUID(_md5_uuid("ih0"))
    with engine.connect() as conn:
        # Cursors half-way down: the keys of the rows there, as a page hands them out.
        deep = conn.execute(text(
            "SELECT last_message_at, id FROM outbox.chats WHERE workspace_id = :ws "
            "AND status = 'active' ORDER BY COALESCE(last_message_at, '-infinity'::timestamptz) "
            "DESC, id DESC OFFSET :n LIMIT 1"), {"ws": WORKSPACE, "n": chats // 2}).one()
        back = conn.execute(text(
            "SELECT created_at, id FROM outbox.messages WHERE chat_id = :c "
            "ORDER BY created_at DESC, id DESC OFFSET :n LIMIT 1"),
            {"c": thread_chat, "n": 5000}).one()
    chats_deep = encode_cursor(deep.last_message_at, deep.id)
    thread_deep = encode_cursor(back.created_at, back.id)
    cases: dict[str, Callable[[Session], object]] = {
        "chats_first_page": lambda s: list_chats(s, workspace_id=WORKSPACE),
        "chats_deep_page": lambda s: list_chats(s, workspace_id=WORKSPACE, cursor=chats_deep),
        "chats_search_name": lambda s: list_chats(s, workspace_id=WORKSPACE, q="mar"),
        # 10 numbers match; then 10,000, all in chats 40,000 down the list:
        # past FEW_MATCHES the list is walked, SEARCH_WALK chats per call.
        "chats_search_number": lambda s: list_chats(s, workspace_id=WORKSPACE, q="+155700412"),
        # Past FEW_MATCHES a call walks a bounded stretch and may come back
        # empty with a cursor; the page a person waits for is the first one
        # with a match, so this follows the cursors until one holds chats.
        "chats_search_number_broad": lambda s: list_chats(s, workspace_id=WORKSPACE,
                                                          q="+1557004"),
        "chats_search_number_broad_to_first_hit": lambda s: _first_hit(s, "+1557004"),
        "chats_assigned": lambda s: list_chats(s, workspace_id=WORKSPACE, assigned_to=AGENT),
        "thread_latest": lambda s: thread(s, thread_chat, workspace_id=WORKSPACE),
        "thread_deep_page": lambda s: thread(s, thread_chat, workspace_id=WORKSPACE,
                                             before=thread_deep),
    }
    return {name: _time(engine, call, samples) for name, call in cases.items()}


def _first_hit(session: Session, q: str) -> int:
    """Calls until a page holds a chat (or the list ends)."""
    cursor, calls = None, 0
    while True:
        page = list_chats(session, workspace_id=WORKSPACE, q=q, cursor=cursor)
        calls += 1
        if page.chats or page.next_cursor is None:
            return calls
        cursor = page.next_cursor


def _time(engine: Engine, call: Callable[[Session], object], samples: int) -> dict[str, Any]:
    timings: list[float] = []
    with Session(engine) as session:
        for i in range(samples + 10):
            started = time.perf_counter()
            with session.begin():
                call(session)
            if i >= 10:
                timings.append((time.perf_counter() - started) * 1000)
        statements = _recorded(engine, session, call)
    timings.sort()
    return {"p50_ms": round(statistics.median(timings), 2),
            "p99_ms": round(timings[min(len(timings) - 1, int(len(timings) * 0.99))], 2),
            "plans": [_plan(engine, stmt, params) for stmt, params in statements]}


def _recorded(engine: Engine, session: Session, call: Callable[[Session], object]
              ) -> list[tuple[str, Any]]:
    """The statements (and their parameters) one call runs."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        with session.begin():
            call(session)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return seen


def _plan(engine: Engine, statement: str, parameters: Any) -> dict[str, Any]:
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        with raw.cursor() as cur:
            cur.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters)
            top = cur.fetchone()[0][0]
        conn.rollback()
    return plan_summary(top)


def _md5_uuid(value: str) -> str:
    import hashlib

    return str(uuid.UUID(hashlib.md5(value.encode()).hexdigest()))  # noqa: S324 (an id, as PG's md5()::uuid)
