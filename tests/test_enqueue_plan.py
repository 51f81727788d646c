"""A bulk enqueue never scans a table, and never JIT-compiles.

ENQUEUE (db/queries.py) runs batches with nested loops off (see
`outbox.enqueue.batch_plan_settings`). Its lookups of known idempotency
keys, contacts and chats must still be index probes: a hash join against a
sequential scan of `messages` would make every batch cost O(all messages
ever sent). And with a disabled join type PostgreSQL's cost estimate is
~10^10, over every JIT threshold: JIT must be off for the statement, or each
batch spends about a second compiling (seen with auto_explain on PG 15).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from outbox.enqueue import (
    ENQUEUE_SQL,
    EnqueueOptions,
    batch_plan_settings,
    enqueue_many,
    enqueue_params,
)
from outbox.message_types import TextMessage, prepare
from tests.test_claim_plan import CHANNELS, CHATS, _fill, _nodes, _render

BATCH = 200
TABLES = {"messages", "contacts", "chats", "outbox_messages"}


def _batch(channels: list[uuid.UUID]) -> list[TextMessage]:
    """Half to chats _fill made (known contacts and chats), half to new ones;
    every other message with an idempotency key."""
    out = []
    for i in range(BATCH):
        chat = i % CHATS if i % 2 else CHATS + i
        out.append(TextMessage(channels[chat % len(channels)], f"+1556{chat:07d}", f"b{i}",
                               idempotency_key=f"k{i}" if i % 4 < 2 else None))
    return out


def _explain_enqueue(session: Session, messages: list[TextMessage]) -> Any:
    prepared = [prepare(m) for m in messages]
    params = enqueue_params(list(enumerate(prepared)), [uuid.uuid4() for _ in prepared],
                            EnqueueOptions())
    with batch_plan_settings(session):
        raw = session.connection().exec_driver_sql(
            "EXPLAIN (FORMAT JSON) " + ENQUEUE_SQL, params).scalar_one()
    return raw if not isinstance(raw, str) else json.loads(raw)


@pytest.fixture
def never_analyzed(clean_db: Engine) -> Iterator[Callable[[], None]]:
    """Makes the tables never analysed, as on a new install, and keeps them
    so for the test: autovacuum (on, on the embedded server) would analyse
    them while the test fills them, and a plan on those half-way figures
    (an empty `contacts`: a scan) is not this test's case."""
    tables = ", ".join(f"outbox.{t}" for t in sorted(TABLES))

    def forget() -> None:
        with clean_db.begin() as conn:
            for t in sorted(TABLES):
                conn.exec_driver_sql(
                    f"ALTER TABLE outbox.{t} SET (autovacuum_enabled = false)")
            conn.exec_driver_sql(f"TRUNCATE {tables} CASCADE")  # resets the row counts
        _forget_statistics(clean_db)

    yield forget
    with clean_db.begin() as conn:
        for t in sorted(TABLES):
            conn.exec_driver_sql(f"ALTER TABLE outbox.{t} RESET (autovacuum_enabled)")


def _forget_statistics(engine: Engine) -> None:
    """TRUNCATE keeps the column statistics an earlier ANALYZE left: with
    those (say, one contact per workspace) the planner can prefer another
    index on `contacts`, a planner tie on stale figures. Deleting them needs
    a superuser, which both test servers are."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "DELETE FROM pg_statistic WHERE starelid = ANY(ARRAY["
            + ", ".join(f"'outbox.{t}'::regclass" for t in sorted(TABLES | {"channels"}))
            + "])")


@pytest.mark.parametrize("analyzed", [False, True], ids=["before-analyze", "after-analyze"])
def test_batch_enqueue_probes_indexes_and_never_scans(  # type: ignore[no-untyped-def]
        clean_db: Engine, make_channel, never_analyzed: Callable[[], None],
        analyzed: bool) -> None:
    channels = [make_channel(name=f"plan-{i}", phone=f"+1555000{i:04d}")
                for i in range(CHANNELS)]
    if not analyzed:
        never_analyzed()
    _fill(clean_db, channels)
    with Session(clean_db) as session:
        if analyzed:
            session.connection().exec_driver_sql(
                "ANALYZE outbox.outbox_messages, outbox.messages, outbox.chats, outbox.contacts, "
                "outbox.channels")
        plan = _explain_enqueue(session, _batch(channels))
        session.rollback()
    nodes = _nodes(plan)
    scans = sorted({n["Relation Name"] for n in nodes
                    if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in TABLES})
    assert not scans, f"Seq Scan on {scans}:\n{_render(plan)}"
    used = {n["Index Name"] for n in nodes if "Index Name" in n}
    expected = {"uq_messages_channel_idempotency_key", "uq_contacts_workspace_id_phone",
                "uq_chats_channel_id_wa_chat_id"}
    assert expected <= used, f"expected {sorted(expected - used)}:\n{_render(plan)}"


def test_batch_enqueue_is_never_jit_compiled(clean_db: Engine, make_channel) -> None:  # type: ignore[no-untyped-def]
    channels = [make_channel(name=f"plan-{i}", phone=f"+1555000{i:04d}")
                for i in range(CHANNELS)]
    with Session(clean_db) as session:
        conn = session.connection()
        if not conn.exec_driver_sql("SELECT pg_jit_available()").scalar_one():
            pytest.skip("this server has no JIT (the embedded one is built without LLVM)")
        # A caller whose settings would JIT anything: the batch turns it off.
        conn.exec_driver_sql("SET LOCAL jit = on")
        conn.exec_driver_sql("SET LOCAL jit_above_cost = 0")
        plan = _explain_enqueue(session, _batch(channels))
        jit_after = conn.exec_driver_sql("SELECT current_setting('jit')").scalar_one()
        session.rollback()
    assert "JIT" not in plan[0], f"the batch statement would be JIT-compiled: {plan[0]['JIT']}"
    assert jit_after == "on"  # the caller's setting, put back


def test_the_explained_batch_enqueues(clean_db: Engine, make_channel) -> None:  # type: ignore[no-untyped-def]
    """The statement EXPLAINed above is the one that works on that data."""
    channels = [make_channel(name=f"plan-{i}", phone=f"+1555000{i:04d}")
                for i in range(CHANNELS)]
    _fill(clean_db, channels)
    with Session(clean_db) as session, session.begin():
        results = enqueue_many(session, _batch(channels))
    assert len(results) == BATCH and not any(r.duplicate for r in results)
    # Odd messages went to the CHATS chats _fill made; even ones to new chats.
    assert [r.chat_created for r in results] == [i % 2 == 0 for i in range(BATCH)]
    with Session(clean_db) as session, session.begin():
        again = enqueue_many(session, _batch(channels))
    keyed = [i for i in range(BATCH) if i % 4 < 2]
    assert all(again[i].duplicate and again[i].message_id == results[i].message_id
               for i in keyed)
