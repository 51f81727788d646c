"""Bulk data for scripts/bench: a big outbox backlog in seconds, not hours.

Rows are generated in PostgreSQL (INSERT ... SELECT generate_series), not
through the enqueue API, with the spread a real deployment has: every
channel, many chats, messages of one chat in id order, a `messages` row for
every outbox row. `messages` and `outbox_messages` lose their indexes and
keys during the load and get them back from their own definitions
(pg_get_indexdef / pg_get_constraintdef), so the schema afterwards is the
migrated one; then VACUUM (ANALYZE), as autovacuum would have done on a
table that grew over time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

BIG_TABLES = ("outbox.messages", "outbox.outbox_messages")

_CONTACTS = """
INSERT INTO outbox.contacts (id, workspace_id, phone, is_group)
SELECT md5('bt' || g)::uuid, 'default', '+1556' || lpad(g::text, 7, '0'), false
FROM generate_series(0, CAST(%(chats)s AS int) - 1) g
"""

_CHATS = """
INSERT INTO outbox.chats (id, workspace_id, channel_id, wa_chat_id, contact_id)
SELECT md5('bc' || g)::uuid, 'default', c.id, '1556' || lpad(g::text, 7, '0') || '@s.whatsapp.net',
       md5('bt' || g)::uuid
FROM generate_series(0, CAST(%(chats)s AS int) - 1) g
JOIN bench_channels c ON c.k = g %% %(channels)s
"""

# Message n goes to chat n % chats (so a chat's messages are spread over the
# whole id range, in order); the first `sent` messages are sent, the rest
# queued and due. Timestamps grow with n, 1 ms apart, ending now.
_MESSAGES = """
INSERT INTO outbox.messages (id, workspace_id, channel_id, chat_id, direction, type, body, payload,
                      status, wa_message_id, created_at, updated_at, sent_at)
SELECT md5('bm' || n)::uuid, 'default', c.id, md5('bc' || (n %% %(chats)s))::uuid,
       'outbound', 'text', %(tag)s || n, jsonb_build_object('body', %(tag)s || n),
       CASE WHEN n < %(sent)s THEN 'sent' ELSE 'pending' END,
       CASE WHEN n < %(sent)s THEN 'bench-' || n END,
       ts, ts, CASE WHEN n < %(sent)s THEN ts END
FROM generate_series(CAST(%(lo)s AS bigint), CAST(%(hi)s AS bigint)) n
JOIN bench_channels c ON c.k = (n %% %(chats)s) %% %(channels)s
CROSS JOIN LATERAL (SELECT now() - make_interval(secs => (%(total)s - n) * 0.001)) t(ts)
"""

_OUTBOX = """
INSERT INTO outbox.outbox_messages (workspace_id, message_id, channel_id, chat_id, recipient,
                             message_type, payload, status, attempts, max_attempts, priority,
                             next_attempt_at, created_at, updated_at, sent_at)
SELECT 'default', md5('bm' || n)::uuid, c.id, md5('bc' || (n %% %(chats)s))::uuid,
       '1556' || lpad((n %% %(chats)s)::text, 7, '0') || '@s.whatsapp.net',
       'text', jsonb_build_object('body', %(tag)s || n),
       CASE WHEN n < %(sent)s THEN 'sent' ELSE 'queued' END,
       CASE WHEN n < %(sent)s THEN 1 ELSE 0 END, 5, 0,
       ts, ts, ts, CASE WHEN n < %(sent)s THEN ts END
FROM generate_series(CAST(%(lo)s AS bigint), CAST(%(hi)s AS bigint)) n
JOIN bench_channels c ON c.k = (n %% %(chats)s) %% %(channels)s
CROSS JOIN LATERAL (SELECT now() - make_interval(secs => (%(total)s - n) * 0.001)) t(ts)
ORDER BY n
"""


def load_backlog(
    conninfo: str,
    *,
    channel_ids: Sequence[uuid.UUID],
    queued: int,
    sent: int,
    chats: int,
    tag: str = "bl-",
    chunk: int = 500_000,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, float]:
    """Empty the queue tables and load `sent` sent + `queued` queued rows.
    Returns seconds per phase."""
    phases: dict[str, float] = {}
    total = queued + sent
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        t = time.perf_counter()
        conn.execute("TRUNCATE outbox.outbox_messages, outbox.messages, outbox.chats, "
                     "outbox.contacts RESTART IDENTITY")
        conn.execute("CREATE TEMP TABLE bench_channels (k int PRIMARY KEY, id uuid NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_channels VALUES (%s, %s)",
                            list(enumerate(channel_ids)))
        p = {"chats": chats, "channels": len(channel_ids), "sent": sent, "total": total,
             "tag": tag}
        conn.execute(_CONTACTS, p)
        conn.execute(_CHATS, p)
        saved = _drop_keys_and_indexes(conn, BIG_TABLES)
        phases["prepare"] = time.perf_counter() - t
        t = time.perf_counter()
        for lo in range(0, total, chunk):
            hi = min(total, lo + chunk) - 1
            conn.execute(_MESSAGES, {**p, "lo": lo, "hi": hi})
            conn.execute(_OUTBOX, {**p, "lo": lo, "hi": hi})
            log(f"  loaded {hi + 1:,}/{total:,} rows ({time.perf_counter() - t:.0f}s)")
        phases["insert"] = time.perf_counter() - t
        t = time.perf_counter()
        _restore(conn, saved)
        phases["indexes"] = time.perf_counter() - t
        log(f"  indexes and keys rebuilt ({phases['indexes']:.0f}s)")
        t = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) outbox.contacts, outbox.chats, outbox.messages, "
                     "outbox.outbox_messages")
        phases["vacuum_analyze"] = time.perf_counter() - t
        conn.execute("DROP TABLE bench_channels")
    return {k: round(v, 1) for k, v in phases.items()}


def _drop_keys_and_indexes(conn: psycopg.Connection[Any], tables: Sequence[str]) -> dict[str, Any]:
    names = list(tables)
    fks = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype = 'f' AND (conrelid = ANY(%(t)s::regclass[]) "
        "OR confrelid = ANY(%(t)s::regclass[]))", {"t": names}).fetchall()
    keys = conn.execute(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype IN ('p', 'u') AND conrelid = ANY(%(t)s::regclass[]) "
        "ORDER BY contype", {"t": names}).fetchall()
    indexes = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
        "WHERE i.indrelid = ANY(%(t)s::regclass[]) AND NOT EXISTS ("
        "  SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid "
        "  AND c.contype IN ('p', 'u', 'x') AND c.conrelid = i.indrelid)", {"t": names}).fetchall()
    for table, name, _ in fks:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for table, name, _ in keys:
        conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    return {"fks": fks, "keys": keys, "indexes": indexes}


def _restore(conn: psycopg.Connection[Any], saved: dict[str, Any]) -> None:
    for table, name, definition in saved["keys"]:
        conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for _, definition in saved["indexes"]:
        conn.execute(definition)
    for table, name, definition in saved["fks"]:
        conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')


def table_sizes(conn: psycopg.Connection[Any], tables: Sequence[str] = BIG_TABLES
                ) -> dict[str, Any]:
    """Heap, total and per-index sizes in MB."""
    out: dict[str, Any] = {}
    for table in tables:
        heap, total, rows = conn.execute(
            "SELECT pg_relation_size(%(t)s::regclass), pg_total_relation_size(%(t)s::regclass), "
            "(SELECT reltuples::bigint FROM pg_class WHERE oid = %(t)s::regclass)",
            {"t": table}).fetchone()  # type: ignore[misc]
        idx = conn.execute(
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index "
            "WHERE indrelid = %(t)s::regclass ORDER BY 2 DESC", {"t": table}).fetchall()
        out[table] = {
            "rows_estimate": int(rows),
            "heap_mb": round(heap / 2**20, 1),
            "total_mb": round(total / 2**20, 1),
            "indexes_mb": {name: round(size / 2**20, 1) for name, size in idx},
        }
    return out


def plan_summary(explained: dict[str, Any]) -> dict[str, Any]:
    """One EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) result: its time, the
    tables it scanned sequentially, the indexes it used, rows its scans read."""
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(explained["Plan"])
    p = explained["Plan"]
    return {"execution_ms": explained.get("Execution Time"),
            "seq_scans": sorted({n.get("Relation Name", "?") for n in nodes
                                 if n["Node Type"] == "Seq Scan"}),
            "indexes": sorted({n["Index Name"] for n in nodes if "Index Name" in n}),
            "rows_read": sum(int(n.get("Actual Rows", 0)) for n in nodes
                             if "Scan" in n["Node Type"]),
            "shared_hit": p.get("Shared Hit Blocks"), "shared_read": p.get("Shared Read Blocks")}
