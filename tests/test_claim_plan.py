"""The claim is planner-proof: EXPLAIN never shows a Seq Scan on outbox_messages.

(Nor does the dispatcher's start-up query for channels with queued rows.)

A queue table is mostly sent rows waiting for the pruner, with a few queued
ones; a sequential scan there makes every claim cost O(table). The CLAIM
statement (db/queries.py), and its per-channel inner scan on its own, must
use the partial index `ix_outbox_due` (and `ix_outbox_chat_unfinished` for
the per-chat head-of-line test), with sequential scans allowed, before and
after ANALYZE, with statistics gone stale (analysed while the tables were
empty, then filled and churned, as on a server with autovacuum off), after
the daemon's analyzer pass, as a custom plan and as the generic plan a
prepared statement gets after a few executions (psycopg prepares
automatically).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, text

from outbox.db import queries

SENT_ROWS = 5_000
QUEUED_ROWS = 100
CHANNELS = 4
CHATS = 500

CLAIM_PARAMS = {"per_channel": 50, "batch_size": 200, "lease_seconds": 60.0}


def _inner_scan() -> str:
    """The per-channel scan inside CLAIM's LATERAL join, for one channel."""
    m = re.search(r"FROM channels rc\n    CROSS JOIN LATERAL \((.*?)\n    \) o\n", queries.CLAIM,
                  re.S)
    assert m, "CLAIM no longer has the LATERAL per-channel scan this test expects"
    inner = m.group(1)
    assert "rc.id" in inner
    # An unpaced channel: no budget, no chat checks (NULLs, as the LEFT JOIN gives).
    for column, value in (("rc.id", "CAST(:channel_id AS uuid)"),
                          ("rc.rows_left", "CAST(NULL AS bigint)"),
                          ("rc.new_chats_left", "CAST(NULL AS bigint)"),
                          ("rc.chat_gap_seconds", "CAST(NULL AS float8)"),
                          ("rc.chat_checks", "false")):
        inner = inner.replace(column, value)
    assert "rc." not in inner, "a column of the channel this test does not set"
    return inner


def _fill(engine: Engine, channels: list[uuid.UUID]) -> None:
    """SENT_ROWS sent and QUEUED_ROWS queued rows, spread over channels and chats."""
    with engine.begin() as conn:
        conn.execute(text("CREATE TEMP TABLE plan_channels (k int, id uuid) ON COMMIT DROP"))
        for k, cid in enumerate(channels):
            conn.execute(text("INSERT INTO plan_channels VALUES (:k, :id)"), {"k": k, "id": cid})
        conn.execute(text("""
            INSERT INTO outbox.contacts (id, workspace_id, phone)
            SELECT md5('pt' || g)::uuid, 'default', '+1556' || lpad(g::text, 7, '0')
            FROM generate_series(0, :chats - 1) g"""), {"chats": CHATS})
        conn.execute(text("""
            INSERT INTO outbox.chats (id, workspace_id, channel_id, wa_chat_id, contact_id)
            SELECT md5('pc' || g)::uuid, 'default', c.id,
                   '1556' || lpad(g::text, 7, '0') || '@s.whatsapp.net', md5('pt' || g)::uuid
            FROM generate_series(0, :chats - 1) g JOIN plan_channels c ON c.k = g % :n"""),
            {"chats": CHATS, "n": len(channels)})
        conn.execute(text("""
            INSERT INTO outbox.messages (id, workspace_id, channel_id, chat_id, direction,
                                         type, body, status, sent_at)
            SELECT md5('pm' || g)::uuid, 'default', c.id, md5('pc' || (g % :chats))::uuid,
                   'outbound', 'text', 'm' || g,
                   CASE WHEN g < :sent THEN 'sent' ELSE 'pending' END,
                   CASE WHEN g < :sent THEN now() END
            FROM generate_series(0, :total - 1) g JOIN plan_channels c ON c.k = (g % :chats) % :n
            """), {"chats": CHATS, "n": len(channels), "sent": SENT_ROWS,
                   "total": SENT_ROWS + QUEUED_ROWS})
        conn.execute(text("""
            INSERT INTO outbox.outbox_messages (workspace_id, message_id, channel_id, chat_id,
                                                recipient, message_type, payload, status, attempts,
                                                next_attempt_at, sent_at)
            SELECT 'default', md5('pm' || g)::uuid, c.id, md5('pc' || (g % :chats))::uuid,
                   '1556' || lpad((g % :chats)::text, 7, '0') || '@s.whatsapp.net', 'text',
                   jsonb_build_object('body', 'm' || g),
                   CASE WHEN g < :sent THEN 'sent' ELSE 'queued' END,
                   CASE WHEN g < :sent THEN 1 ELSE 0 END,
                   now() - make_interval(secs => (:total - g) * 0.001),
                   CASE WHEN g < :sent THEN now() END
            FROM generate_series(0, :total - 1) g JOIN plan_channels c ON c.k = (g % :chats) % :n
            ORDER BY g"""), {"chats": CHATS, "n": len(channels), "sent": SENT_ROWS,
                             "total": SENT_ROWS + QUEUED_ROWS})


def _nodes(plan: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        out.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return out


def _explain(conn: Any, sql: str, params: dict[str, Any]) -> Any:
    raw = conn.execute(text("EXPLAIN (FORMAT JSON) " + sql), params).scalar_one()
    return raw if not isinstance(raw, str) else json.loads(raw)


def _explain_generic(conn: Any, sql: str, params: dict[str, Any]) -> Any:
    """EXPLAIN EXECUTE of a PREPAREd statement under force_generic_plan: the
    plan psycopg's automatic prepared statements end up with."""
    names: list[str] = []

    def number(m: re.Match[str]) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    body = re.sub(r"(?<![:\w]):(\w+)", number, sql)
    types = {"per_channel": "int", "batch_size": "int", "claim_token": "uuid",
             "lease_seconds": "float8", "channel_id": "uuid", "limit": "int"}
    conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
    conn.exec_driver_sql(
        f"PREPARE plan_test ({', '.join(types[n] for n in names)}) AS {body}")
    try:
        args = ", ".join("'" + str(params[n]).replace("'", "''") + "'" for n in names)
        raw = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE plan_test ({args})").scalar_one()
    finally:
        conn.exec_driver_sql("DEALLOCATE plan_test")
        conn.exec_driver_sql("RESET plan_cache_mode")
    return raw if not isinstance(raw, str) else json.loads(raw)


def _render(plan: Any) -> str:
    """A compact EXPLAIN-like tree for failure messages."""
    lines: list[str] = []

    def walk(node: dict[str, Any], depth: int) -> None:
        label = node["Node Type"]
        for key in ("Relation Name", "Index Name", "CTE Name", "Subplan Name"):
            if key in node:
                label += f" [{key.split()[0].lower()} {node[key]}]"
        for key in ("Filter", "Index Cond", "Join Filter", "Hash Cond"):
            if key in node:
                label += f" {key}: {node[key]}"
        lines.append(f"{'  ' * depth}-> {label} (rows={node.get('Plan Rows')}, "
                     f"cost={node.get('Total Cost')})")
        for child in node.get("Plans", []):
            walk(child, depth + 1)

    walk(plan[0]["Plan"], 0)
    return "\n".join(lines)


def _assert_index_only_access(plan: Any, *, what: str, expect: set[str]) -> None:
    nodes = _nodes(plan)
    seq = [n for n in nodes
           if n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "outbox_messages"]
    used = {n["Index Name"] for n in nodes if "Index Name" in n}
    assert not seq, f"{what}: Seq Scan on outbox_messages:\n{_render(plan)}"
    missing = expect - used
    assert not missing, (f"{what}: expected {sorted(missing)} in the plan, got {sorted(used)}:\n"
                         f"{_render(plan)}")


HOT = "outbox.outbox_messages, outbox.messages, outbox.chats, outbox.contacts, outbox.channels"


def _churn(engine: Engine) -> None:
    """Dead row versions, as sending leaves them: every sent row updated twice."""
    with engine.begin() as conn:
        for _ in range(2):
            conn.execute(text("UPDATE outbox.outbox_messages SET updated_at = now() "
                              "WHERE status = 'sent'"))


def _analyzer_pass(engine: Engine) -> None:
    """The daemon's analyzer, with autovacuum off for the queue table (so it
    acts on any server)."""
    from outbox.database import make_async_engine
    from outbox.maintenance.analyzer import Analyzer
    from tests.test_analyzer import FLUSH_STATS

    url = engine.url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        conn.execute(text(FLUSH_STATS))
        conn.execute(text("ALTER TABLE outbox.outbox_messages SET (autovacuum_enabled = false)"))

    async def run() -> None:
        async_engine = make_async_engine(url, pool_size=1)
        try:
            # The change counts show once the writers' backends report them.
            for _ in range(100):
                result = await Analyzer().run_once(async_engine)
                assert result is not None
                if "outbox_messages" in result.analyzed + result.vacuumed:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError("the analyzer never acted on outbox_messages")
        finally:
            await async_engine.dispose()

    try:
        asyncio.run(run())
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE outbox.outbox_messages RESET (autovacuum_enabled)"))


@pytest.mark.parametrize("analyzed", ["before-analyze", "stale", "after-analyze", "analyzer"])
@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
@pytest.mark.parametrize("statement", ["claim", "per-channel-scan", "channels-with-queued"])
def test_claim_uses_the_due_index(clean_db: Engine, make_channel, statement: str,  # type: ignore[no-untyped-def]
                                  generic: bool, analyzed: str,
                                  request: pytest.FixtureRequest) -> None:
    channels = [make_channel(name=f"plan-{i}", phone=f"+1555000{i:04d}")
                for i in range(CHANNELS)]
    if analyzed == "stale":  # statistics of empty tables, never revisited
        with clean_db.begin() as conn:
            conn.execute(text(f"ANALYZE {HOT}"))
    _fill(clean_db, channels)
    if analyzed in ("stale", "analyzer"):
        _churn(clean_db)
    if analyzed == "analyzer":
        _analyzer_pass(clean_db)
    expect = {"ix_outbox_due", "ix_outbox_chat_unfinished"}
    if statement == "claim":
        sql, params = queries.CLAIM, {**CLAIM_PARAMS, "claim_token": uuid.uuid4()}
    elif statement == "channels-with-queued":  # the dispatcher's credential warm-up
        sql, params, expect = queries.CHANNELS_WITH_QUEUED, {"limit": 64}, {"ix_outbox_due"}
    else:
        sql = _inner_scan()
        params = {"channel_id": channels[0], "per_channel": CLAIM_PARAMS["per_channel"]}
    with clean_db.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = on")
        if analyzed == "after-analyze":
            conn.exec_driver_sql(f"ANALYZE {HOT}")
        plan = (_explain_generic if generic else _explain)(conn, sql, params)
        conn.rollback()
    _assert_index_only_access(plan, what=f"{statement} ({'generic' if generic else 'custom'} "
                              f"plan, {analyzed})", expect=expect)


@pytest.mark.parametrize("analyzed", [False, True], ids=["before-analyze", "after-analyze"])
@pytest.mark.parametrize("generic", [False, True], ids=["custom-plan", "generic-plan"])
def test_paced_claim_probes_chats_by_key(clean_db: Engine, make_channel,  # type: ignore[no-untyped-def]
                                         generic: bool, analyzed: bool) -> None:
    """With every pacing check on (budget, new chats, chat gap), the claim
    still reads the outbox through its indexes, and a chat by its primary
    key: never a scan of every chat per claim."""
    from sqlalchemy.orm import Session

    from outbox.admin.pacing import set_limits

    channels = [make_channel(name=f"plan-{i}", phone=f"+1555000{i:04d}")
                for i in range(CHANNELS)]
    _fill(clean_db, channels)
    with Session(clean_db) as s, s.begin():
        for ch in channels:
            set_limits(s, ch, per_second=100, per_day=10_000, new_chats_per_day=1_000,
                       chat_gap="1s")
    with clean_db.connect() as conn:
        conn.exec_driver_sql("SET enable_seqscan = on")
        if analyzed:
            conn.exec_driver_sql("ANALYZE outbox.outbox_messages, outbox.messages, outbox.chats, "
                                 "outbox.contacts, outbox.channels, outbox.channel_pacing")
        plan = (_explain_generic if generic else _explain)(
            conn, queries.CLAIM, {**CLAIM_PARAMS, "claim_token": uuid.uuid4()})
        conn.rollback()
    _assert_index_only_access(plan, what="paced claim", expect={
        "ix_outbox_due", "ix_outbox_chat_unfinished"})
    chats = [n for n in _nodes(plan) if n.get("Relation Name") == "chats"]
    assert chats and all(n["Node Type"] == "Index Scan" and "id = " in n["Index Cond"]
                         for n in chats), f"chats not probed by id:\n{_render(plan)}"


def test_claim_still_claims_after_the_plan_checks(clean_db: Engine, make_channel) -> None:  # type: ignore[no-untyped-def]
    """The EXPLAINed statement is the one that works: it claims due heads of chats."""
    channels = [make_channel(name=f"plan-{i}", phone=f"+1555000{i:04d}")
                for i in range(CHANNELS)]
    _fill(clean_db, channels)
    with clean_db.connect() as conn:
        tx = conn.begin()
        rows = conn.execute(text(queries.CLAIM),
                            {**CLAIM_PARAMS, "claim_token": uuid.uuid4()}).all()
        tx.rollback()
    # QUEUED_ROWS queued over CHATS chats: each chat's first queued row is claimable.
    assert len(rows) == min(QUEUED_ROWS, CHATS, CLAIM_PARAMS["batch_size"])
    assert len({r.chat_id for r in rows}) == len(rows)
