"""Model-based test of the outbox row state machine against the real SQL.

Hypothesis drives the statements of db/queries.py (CLAIM, MARK_SENDS_STARTED,
COMPLETE, RESCUE_EXPIRED, RETRY_FAILED) on a handful of rows in PostgreSQL, in random
interleavings, and keeps a model of what each row must be. After every step:

- every row is in a legal state; `sending` iff it holds a claim token and a
  lease; attempts never exceed max_attempts (the issue asks for <= max + 1;
  the code keeps the stronger bound) and a queued row can still be claimed;
- the database agrees with the model, and the message row follows the
  outbox row (pending / sent with its WhatsApp id / failed with a reason);
- a claim takes exactly the rows the head-of-line rule allows (an oracle in
  Python reads the same snapshot), and never two rows of one chat are
  `sending` at once (a dead letter requeued by `outbox retry` is exempt: it
  is documented to go out of order);
- a completion with a stale claim token changes nothing at all;

and at the end, draining (rescue, wait, claim, complete) leaves every row
`sent` or `failed`: no state is a dead end.

Bounded: ~30 examples of ~30 steps, a few seconds in all.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.db import queries
from outbox.dispatch.backoff import RetryPolicy
from outbox.dispatch.outcomes import Decision, decide, release
from outbox.enqueue import enqueue_many
from outbox.message_types import TextMessage
from outbox.providers.base import ChannelProblem, Outcome, SendResult

pytestmark = pytest.mark.slow  # hypothesis state machines

CHATS = ("+15550100001", "+15550100002", "+15550100003")
POLICY = RetryPolicy()
LEGAL = {"queued", "sending", "sent", "failed"}
LEASE_SECONDS = 60.0
RELEASE = "release"  # the dispatcher's release() (shutdown, channel paused meanwhile)

MACHINE_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@dataclass
class Row:
    chat_id: uuid.UUID
    max_attempts: int
    status: str = "queued"
    attempts: int = 0
    claim_token: uuid.UUID | None = None
    retried: bool = False  # requeued by RETRY_FAILED at least once
    started: bool = False  # this claim's request started (MARK_SENDS_STARTED)


class OutboxRowMachine(RuleBasedStateMachine):
    engine: ClassVar[Engine]
    channel_id: ClassVar[uuid.UUID]
    outcomes: ClassVar[tuple[Outcome | str, ...]] = (
        Outcome.SENT, Outcome.TRANSIENT, Outcome.PERMANENT)

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[int, Row] = {}
        self.live: dict[uuid.UUID, set[int]] = {}  # claim token -> rows it still holds
        self.stale: dict[uuid.UUID, set[int]] = {}  # claim token -> rows it held once
        self.rng = random.Random(0)

    # --- setup --------------------------------------------------------------------

    @initialize(plan=st.lists(st.tuples(st.integers(0, len(CHATS) - 1), st.integers(1, 3)),
                              min_size=2, max_size=6))
    def enqueue(self, plan: list[tuple[int, int]]) -> None:
        with self.engine.begin() as conn:
            for table in ("outbox_messages", "messages", "chats", "contacts"):
                conn.execute(text(f"DELETE FROM outbox.{table}"))
        with Session(self.engine) as s, s.begin():
            results = enqueue_many(s, [TextMessage(self.channel_id, CHATS[chat], f"m{i}")
                                       for i, (chat, _) in enumerate(plan)])
        with self.engine.begin() as conn:
            for result, (_, max_attempts) in zip(results, plan, strict=True):
                assert result.outbox_id is not None
                conn.execute(text("UPDATE outbox.outbox_messages SET max_attempts = :m "
                                  "WHERE id = :id"),
                             {"m": max_attempts, "id": result.outbox_id})
                self.rows[result.outbox_id] = Row(result.chat_id, max_attempts)

    # --- rules ------------------------------------------------------------------------

    @rule(batch=st.integers(1, 6))
    def claim(self, batch: int) -> None:
        token = uuid.uuid4()
        with self.engine.begin() as conn:
            now = conn.execute(text("SELECT now()")).scalar_one()
            snapshot = conn.execute(text(
                "SELECT id, chat_id, status, attempts, priority, next_attempt_at "
                "FROM outbox.outbox_messages")).all()
            got = conn.execute(text(queries.CLAIM), {
                "per_channel": batch, "batch_size": batch, "claim_token": token,
                "lease_seconds": LEASE_SECONDS}).all()
        assert sorted(r.id for r in got) == self.claimable(snapshot, now, batch)
        for r in got:
            row = self.rows[r.id]
            assert row.status == "queued"
            row.status, row.attempts, row.claim_token = "sending", row.attempts + 1, token
            row.started = False
            assert r.attempts == row.attempts
        if got:
            self.live[token] = {r.id for r in got}

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        token, ids = self.draw_claimed_rows(data)
        batch = []
        for row_id in ids:
            row = self.rows[row_id]
            outcome = data.draw(st.sampled_from(self.outcomes), label=f"outcome {row_id}")
            batch.append((row_id, token, self.decision(outcome, row, data)))
        done = self.run_complete(batch)
        assert done.completed == len(ids)
        for row_id, _, d in batch:
            row = self.rows[row_id]
            row.status = d.outbox_status
            row.attempts -= 1 if d.refund_attempt else 0
            row.claim_token = None
        self.forget(token, set(ids))

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def sends_start(self, data: st.DataObject) -> None:
        token, ids = self.draw_claimed_rows(data)
        with self.engine.begin() as conn:
            conn.execute(text(queries.MARK_SENDS_STARTED), {"ids": ids, "claim_tokens": [token]})
        for row_id in ids:
            self.rows[row_id].started = True

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def lease_expires_and_rescue(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(list(self.live)), label="claim")
        with self.engine.begin() as conn:
            conn.execute(text(
                "UPDATE outbox.outbox_messages SET locked_until = now() - interval '1 second' "
                "WHERE claim_token = :t AND status = 'sending'"), {"t": token})
        with self.engine.begin() as conn:
            res = conn.execute(text(queries.RESCUE_EXPIRED), {"limit": 1000}).one()
        held = self.live[token]
        # A row whose request never started gets its attempt back.
        refunded = {i for i in held if not self.rows[i].started}
        failing = {i for i in held - refunded
                   if self.rows[i].attempts >= self.rows[i].max_attempts}
        assert (res.requeued, res.failed, res.messages_failed, res.refunded) == (
            len(held) - len(failing), len(failing), len(failing), len(refunded))
        for row_id in held:
            row = self.rows[row_id]
            row.status = "failed" if row_id in failing else "queued"
            row.attempts -= 1 if row_id in refunded else 0
            row.claim_token = None
        self.forget(token, set(held))

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def late_completion_changes_nothing(self, data: st.DataObject) -> None:
        """A worker whose lease was lost (or that completes twice) reports in."""
        token = data.draw(st.sampled_from(list(self.stale)), label="stale claim")
        ids = data.draw(st.lists(st.sampled_from(sorted(self.stale[token])), min_size=1,
                                 unique=True), label="rows")
        batch = [(row_id, token, self.decision(
            data.draw(st.sampled_from(self.outcomes), label="outcome"), self.rows[row_id], data))
            for row_id in ids]
        before = self.dump()
        assert self.run_complete(batch).completed == 0
        assert self.dump() == before

    @rule()
    def retry_failed(self) -> None:
        with self.engine.begin() as conn:
            res = conn.execute(text(queries.RETRY_FAILED), {
                "channel_id": None, "message_id": None, "workspace_id": None}).one()
        failed = [row for row in self.rows.values() if row.status == "failed"]
        assert (res.requeued, res.messages) == (len(failed), len(failed))
        for row in failed:
            row.status, row.attempts, row.retried = "queued", 0, True

    @rule()
    def time_passes(self) -> None:
        """An hour later: every retry's backoff (<= 16 min) has run out. Leases
        are left alone (they expire only in lease_expires_and_rescue)."""
        with self.engine.begin() as conn:
            conn.execute(text(
                "UPDATE outbox.outbox_messages "
                "SET next_attempt_at = next_attempt_at - interval '1 hour'"))

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def rows_are_legal_and_match_the_model(self) -> None:
        rows = self.read_rows()
        assert {r.id for r in rows} == set(self.rows)
        sending_per_chat: dict[uuid.UUID, int] = {}
        for r in rows:
            model = self.rows[r.id]
            assert r.status in LEGAL, r
            assert 0 <= r.attempts <= r.max_attempts, r
            assert (r.status == "sending") == (r.claim_token is not None), r
            assert (r.status == "sending") == (r.locked_until is not None), r
            if r.status == "queued":
                assert r.attempts < r.max_attempts, r
            assert (r.status, r.attempts, r.claim_token) == (
                model.status, model.attempts, model.claim_token), (r, model)
            expected_message = {"sent": "sent", "failed": "failed"}.get(r.status, "pending")
            assert r.message_status == expected_message, r
            assert (r.wa_message_id is not None) == (r.status == "sent"), r
            if r.status == "failed":
                assert r.error, r
            if r.status == "sending" and not model.retried:
                sending_per_chat[r.chat_id] = sending_per_chat.get(r.chat_id, 0) + 1
        assert all(n <= 1 for n in sending_per_chat.values()), (
            f"two rows of one chat in flight at once: {sending_per_chat}")

    # --- the end: nothing is unreachable ---------------------------------------------------

    def teardown(self) -> None:
        if not self.rows:
            return
        for round_no in range(200):
            with self.engine.begin() as conn:
                conn.execute(text(
                    "UPDATE outbox.outbox_messages SET locked_until = now() - interval '1 second', "
                    "next_attempt_at = next_attempt_at - interval '1 hour'"))
            with self.engine.begin() as conn:
                conn.execute(text(queries.RESCUE_EXPIRED), {"limit": 1000})
            token = uuid.uuid4()
            with self.engine.begin() as conn:
                got = conn.execute(text(queries.CLAIM), {
                    "per_channel": 100, "batch_size": 100, "claim_token": token,
                    "lease_seconds": LEASE_SECONDS}).all()
            batch = []
            for r in got:
                outcome = Outcome.SENT if (r.id + round_no) % 2 else Outcome.TRANSIENT
                result = SendResult(outcome, wa_message_id=f"wa-{uuid.uuid4()}",
                                    error="HTTP 503")
                batch.append((r.id, token, decide(attempts=r.attempts,
                                                  max_attempts=r.max_attempts,
                                                  result=result, policy=POLICY, rng=self.rng)))
            if batch:
                assert self.run_complete(batch).completed == len(batch)
            statuses = {r.status for r in self.read_rows()}
            if statuses <= {"sent", "failed"}:
                break
        rows = self.read_rows()
        assert {r.status for r in rows} <= {"sent", "failed"}, rows
        assert all(r.message_status == r.status for r in rows), rows

    # --- helpers ----------------------------------------------------------------------------

    def draw_claimed_rows(self, data: st.DataObject) -> tuple[uuid.UUID, list[int]]:
        """A live claim and some of the rows it holds."""
        token = data.draw(st.sampled_from(list(self.live)), label="claim")
        ids = data.draw(st.lists(st.sampled_from(sorted(self.live[token])), min_size=1,
                                 unique=True), label="rows")
        return token, ids

    @staticmethod
    def claimable(snapshot: Sequence[Any], now: datetime, batch: int) -> list[int]:
        """The head-of-line rule, as documented in db/queries.py CLAIM: a row
        waits while an earlier row of its chat is sending, waiting for a retry
        (attempts > 0), or due now."""
        def blocked(o: Any) -> bool:
            return any(
                e.chat_id == o.chat_id and e.id < o.id and e.status in ("queued", "sending")
                and (e.status == "sending" or e.attempts > 0 or e.next_attempt_at <= now)
                for e in snapshot)

        due = [o for o in snapshot
               if o.status == "queued" and o.next_attempt_at <= now and not blocked(o)]
        due.sort(key=lambda o: (-o.priority, o.next_attempt_at, o.id))
        return sorted(o.id for o in due[:batch])

    def decision(self, outcome: Outcome | str, row: Row, data: st.DataObject) -> Decision:
        if outcome == RELEASE:
            return release()
        problem = (data.draw(st.sampled_from(list(ChannelProblem)), label="problem")
                   if outcome is Outcome.CHANNEL_PROBLEM else None)
        result = SendResult(Outcome(outcome), wa_message_id=f"wa-{uuid.uuid4()}",
                            channel_problem=problem, error=f"{outcome} (test)",
                            ambiguous=outcome is Outcome.TRANSIENT)
        return decide(attempts=row.attempts, max_attempts=row.max_attempts, result=result,
                      policy=POLICY, rng=self.rng)

    def run_complete(self, batch: list[tuple[int, uuid.UUID, Decision]]) -> Any:
        with self.engine.begin() as conn:
            return conn.execute(text(queries.COMPLETE), {
                "ids": [i for i, _, _ in batch],
                "claim_tokens": [t for _, t, _ in batch],
                "statuses": [d.outbox_status for _, _, d in batch],
                "refunds": [1 if d.refund_attempt else 0 for _, _, d in batch],
                "delays": [d.delay_seconds for _, _, d in batch],
                "errors": [d.error for _, _, d in batch],
                "wa_message_ids": [d.wa_message_id for _, _, d in batch],
            }).one()

    def forget(self, token: uuid.UUID, ids: set[int]) -> None:
        self.live[token] -= ids
        if not self.live[token]:
            del self.live[token]
        self.stale.setdefault(token, set()).update(ids)

    def read_rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT o.id, o.chat_id, o.status, o.attempts, o.max_attempts, o.claim_token, "
                "o.locked_until, m.status AS message_status, m.wa_message_id, m.error "
                "FROM outbox.outbox_messages o JOIN outbox.messages m ON m.id = o.message_id "
                "ORDER BY o.id")))

    def dump(self) -> list[Any]:
        with self.engine.connect() as conn:
            return [
                list(conn.execute(text(f"SELECT * FROM outbox.{table} ORDER BY id")))
                for table in ("outbox_messages", "messages", "chats", "channels")]


def _run(machine: type[OutboxRowMachine], engine: Engine, channel_id: uuid.UUID,
         how: settings = MACHINE_SETTINGS) -> None:
    machine.engine = engine
    machine.channel_id = channel_id
    run_state_machine_as_test(machine, settings=how)


def test_outbox_row_state_machine(make_channel, clean_db: Engine) -> None:
    """Sends that succeed, fail for good, or fail for now (retry / dead letter)."""
    _run(OutboxRowMachine, clean_db, make_channel())


class MachineWithReleases(OutboxRowMachine):
    outcomes = (*OutboxRowMachine.outcomes, Outcome.RATE_LIMITED, Outcome.CHANNEL_PROBLEM,
                RELEASE)


def test_outbox_row_state_machine_with_releases(make_channel, clean_db: Engine) -> None:
    """Also rate limits, channel problems and releases (attempt refunded).

    No shrinking: shrinking a failure replays dozens of database steps per
    try and can take minutes."""
    _run(MachineWithReleases, clean_db, make_channel(),
         settings(MACHINE_SETTINGS, phases=[Phase.explicit, Phase.reuse, Phase.generate]))


# --- the per-chat order regression, deterministic ---------------------------------------------


def _claim(engine: Engine, token: uuid.UUID | None = None) -> list[int]:
    with engine.begin() as conn:
        return sorted(r.id for r in conn.execute(text(queries.CLAIM), {
            "per_channel": 10, "batch_size": 10, "claim_token": token or uuid.uuid4(),
            "lease_seconds": LEASE_SECONDS}))


def test_released_row_keeps_its_place_in_its_chat(make_channel, clean_db: Engine) -> None:
    """A 429 on the first message of a chat: once the pause is over, the
    first message must go out before the second, not beside it."""
    channel = make_channel()
    with Session(clean_db) as s, s.begin():
        enqueue_many(s, [TextMessage(channel, CHATS[0], "first"),
                         TextMessage(channel, CHATS[0], "second")])
    token = uuid.uuid4()
    assert _claim(clean_db, token) == [1]
    rate_limited = decide(attempts=1, max_attempts=5, policy=POLICY,
                          result=SendResult(Outcome.RATE_LIMITED, error="HTTP 429"))
    with clean_db.begin() as conn:
        conn.execute(text(queries.COMPLETE), {
            "ids": [1], "claim_tokens": [token], "statuses": [rate_limited.outbox_status],
            "refunds": [1], "delays": [rate_limited.delay_seconds], "errors": ["HTTP 429"],
            "wa_message_ids": [None]})
    assert _claim(clean_db) == [1]
