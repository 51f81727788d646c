"""Pacing: a channel's limits, enforced by the claim for every dispatcher at once.

Time is never slept through: a budget is back-dated instead (its bucket's
refill time, its day), which is what the passing of time looks like to the
claim. The two-process figures (5/s on the simulator's arrival log) are in
tests/test_pacing_processes.py.
"""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.admin.pacing import Warmup, get_limits, parse_warmup, set_limits
from outbox.db import queries
from outbox.enqueue import enqueue_many
from outbox.errors import ChannelNotFound, InvalidInput
from outbox.message_types import TextMessage
from tests.dispatch_helpers import cli, run_dispatcher


def _limits(engine: Engine, channel_id: uuid.UUID, **changes: Any) -> None:
    with Session(engine) as s, s.begin():
        set_limits(s, channel_id, **changes)


def _enqueue(engine: Engine, channel_id: uuid.UUID, phones: Sequence[str]) -> list[str]:
    bodies = [f"p{n:04d}" for n in range(len(phones))]
    with Session(engine) as s, s.begin():
        enqueue_many(s, [TextMessage(channel_id, p, b) for p, b in zip(phones, bodies,
                                                                       strict=True)])
    return bodies


def _rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT o.id, o.status, o.attempts, o.payload->>'body' AS body "
            "FROM outbox.outbox_messages o ORDER BY o.id")))


def _back_date_day(engine: Engine, channel_id: uuid.UUID) -> None:
    """The budget's day becomes yesterday: what the next day looks like to a claim."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE outbox.channel_pacing SET day = day - 1 "
                          "WHERE channel_id = :id"), {"id": channel_id})


PHONES = [f"+1555{4000000 + n:07d}" for n in range(40)]


# --- setting and showing ----------------------------------------------------------


def test_no_limits_is_unlimited_and_limits_round_trip(make_channel, clean_db: Engine):
    ch = make_channel()
    with Session(clean_db) as s:
        shown = get_limits(s, ch)
    assert shown.usage is None and not shown.limits.paced
    with Session(clean_db) as s, s.begin():
        out = set_limits(s, ch, per_second="5", per_day=1000, new_chats_per_day="50",
                         chat_gap="3s", typing_time=2, timezone="Europe/Berlin",
                         warmup="50,x1.5,1000")
    lim = out.limits
    assert (lim.per_second, lim.burst, lim.per_day, lim.new_chats_per_day) == (5.0, 5, 1000, 50)
    assert (lim.chat_gap_seconds, lim.typing_time_seconds, lim.timezone) == (3.0, 2,
                                                                              "Europe/Berlin")
    assert lim.warmup == Warmup(50, 1.5, 1000) and lim.warmup_from is not None
    assert out.usage is not None and out.usage.day_used == 0 and out.usage.day_cap == 50
    # A change names what it changes; None clears; the burst follows a new rate.
    with Session(clean_db) as s, s.begin():
        out = set_limits(s, ch, per_second=12.5, chat_gap=None)
    assert (out.limits.per_second, out.limits.burst, out.limits.chat_gap_seconds) == (12.5, 13,
                                                                                       None)
    assert out.limits.per_day == 1000 and out.limits.warmup_from == lim.warmup_from


@pytest.mark.parametrize(("changes", "field"), [
    ({"per_second": "0"}, "per_second"),
    ({"per_second": "fast"}, "per_second"),
    ({"burst": 5}, "burst"),  # no rate to burst over
    ({"per_day": 0}, "per_day"),
    ({"per_minute": -1}, "per_minute"),
    ({"new_chats_per_day": "many"}, "new_chats_per_day"),
    ({"chat_gap": "soon"}, "chat_gap"),
    ({"chat_gap": "0s"}, "chat_gap"),
    ({"typing_time": "90s"}, "typing_time"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"warmup": "50,1.5,1000"}, "warmup"),
    ({"warmup": "50,x1,1000"}, "warmup"),
    ({"warmup": "500,x2,100"}, "warmup"),
    ({"speed": 1}, "speed"),
])
def test_bad_limits_are_refused_and_change_nothing(make_channel, clean_db: Engine,
                                                   changes: dict[str, Any], field: str):
    ch = make_channel()
    _limits(clean_db, ch, per_day=10)
    with Session(clean_db) as s, s.begin(), pytest.raises(InvalidInput) as err:
        set_limits(s, ch, **changes)
    assert err.value.field == field
    with Session(clean_db) as s:
        assert get_limits(s, ch).limits.per_day == 10 and get_limits(s, ch).limits.per_second \
            is None


def test_unknown_channel(clean_db: Engine):
    with Session(clean_db) as s, pytest.raises(ChannelNotFound):
        set_limits(s, uuid.uuid4(), per_day=5)


def test_warmup_grows_by_its_factor_up_to_the_ceiling():
    w = parse_warmup("50,x1.5,1000")
    assert [w.cap_on(d) for d in range(10)] == [50, 75, 112, 168, 253, 379, 569, 854, 1000,
                                                1000]
    assert w.cap_on(100_000) == 1000  # no overflow, however long it runs
    assert [w.new_chats_on(d, 100) for d in range(10)] == [5, 8, 12, 17, 26, 38, 57, 86, 100,
                                                          100]
    assert w.new_chats_on(0, 0) == 0 and w.new_chats_on(0, 1) == 1


def test_cli_sets_and_shows_limits_with_usage(make_channel, clean_db: Engine):
    ch = make_channel()
    out = cli("channel", "limits", str(ch), "--per-second", "5", "--burst", "10",
              "--per-day", "1000", "--new-chats-per-day", "50", "--chat-gap", "3s")
    assert out.returncode == 0, out.stderr
    assert "burst 10" in out.stdout and "0 sent today" in out.stdout and "3s" in out.stdout
    out = cli("channel", "limits", str(ch), "--chat-gap", "off", "--json")
    assert out.returncode == 0, out.stderr
    assert '"chat_gap_seconds": null' in out.stdout and '"per_day": 1000' in out.stdout
    out = cli("channel", "limits", str(ch), "--warmup", "50x")
    assert out.returncode != 0 and "START,xFACTOR,CEILING" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


# --- the claim keeps to the budget ---------------------------------------------------


async def test_daily_cap_holds_rows_without_spending_attempts_until_the_next_day(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    ch = make_channel(base_url=sim_url)
    _limits(clean_db, ch, per_day=3)
    # One chat (order must hold across the day) and two others.
    bodies = _enqueue(clean_db, ch, [PHONES[0]] * 4 + PHONES[1:3])

    first = await run_dispatcher(database_url, max_seconds=10)
    assert first.sent == 3 and len(sim.sent()) == 3
    rows = _rows(clean_db)
    waiting = [r for r in rows if r.status == "queued"]
    assert len(waiting) == 3 and all(r.attempts == 0 for r in waiting)
    again = await run_dispatcher(database_url, max_seconds=5)  # same day: nothing
    assert again.claimed == 0

    _back_date_day(clean_db, ch)
    await run_dispatcher(database_url, max_seconds=10)
    sent = [r.body for r in sim.sent()]
    assert sorted(sent) == sorted(bodies)
    chat0 = [b for b in sent if b in bodies[:4]]
    assert chat0 == bodies[:4], "the chat's order survived the wait"
    with Session(clean_db) as s:
        usage = get_limits(s, ch).usage
    assert usage is not None and usage.day_used == 3


async def test_new_chats_per_day_holds_only_first_messages_to_new_chats(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    ch = make_channel(base_url=sim_url)
    # An existing conversation: a message already went out to it.
    _enqueue(clean_db, ch, [PHONES[0]])
    await run_dispatcher(database_url, max_seconds=10)
    sim.reset()
    _limits(clean_db, ch, new_chats_per_day=2)
    _enqueue(clean_db, ch, [PHONES[0], PHONES[0], *PHONES[1:6]])

    await run_dispatcher(database_url, max_seconds=10)
    to = [r.to for r in sim.sent()]
    existing = f"{PHONES[0][1:]}@s.whatsapp.net"
    assert to.count(existing) == 2  # not limited
    assert len(set(to) - {existing}) == 2  # two new chats today, no more
    held = [r for r in _rows(clean_db) if r.status == "queued"]
    assert len(held) == 3 and all(r.attempts == 0 for r in held)

    _back_date_day(clean_db, ch)
    await run_dispatcher(database_url, max_seconds=10)
    assert len(set(r.to for r in sim.sent()) - {existing}) == 4


async def test_warmup_caps_the_day_by_its_age(make_channel, clean_db: Engine,
                                              database_url: str, sim, sim_url):
    ch = make_channel(base_url=sim_url)
    _limits(clean_db, ch, warmup="2,x2,100")
    with clean_db.begin() as conn:  # the warm-up started two days ago: 2 * 2**2
        conn.execute(text("UPDATE outbox.channel_pacing SET warmup_from = warmup_from - 2"))
    _enqueue(clean_db, ch, PHONES[:12])
    summary = await run_dispatcher(database_url, max_seconds=10)
    assert summary.sent == 8 and len(sim.sent()) == 8


async def test_warmup_grows_the_new_chat_cap_in_step_with_the_day_cap(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    ch = make_channel(base_url=sim_url)
    _enqueue(clean_db, ch, [PHONES[0]])  # a known chat: a message already went out
    await run_dispatcher(database_url, max_seconds=10)
    sim.reset()
    # Its third day: the day's cap 2 * 2**2 = 8 of a ceiling of 100, so 8%
    # of the 50 new chats: 4.
    _limits(clean_db, ch, warmup="2,x2,100", new_chats_per_day=50)
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.channel_pacing SET warmup_from = warmup_from - 2"))
    _enqueue(clean_db, ch, [PHONES[0], PHONES[0], *PHONES[1:9]])
    with Session(clean_db) as s:
        usage = get_limits(s, ch).usage
    assert usage is not None and (usage.day_cap, usage.new_chats_cap) == (8, 4)
    out = cli("channel", "limits", str(ch))
    assert "0 today (cap 4 in the warm-up)" in out.stdout, out.stdout

    await run_dispatcher(database_url, max_seconds=10)
    existing = f"{PHONES[0][1:]}@s.whatsapp.net"
    to = [r.to for r in sim.sent()]
    assert to.count(existing) == 2 and len(set(to) - {existing}) == 4
    held = [r for r in _rows(clean_db) if r.status == "queued"]
    assert len(held) == 4 and all(r.attempts == 0 for r in held)

    # The next day: cap 16, new chats 8; the four left go.
    _back_date_day(clean_db, ch)
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.channel_pacing SET warmup_from = warmup_from - 1"))
    await run_dispatcher(database_url, max_seconds=10)
    assert len(set(r.to for r in sim.sent()) - {existing}) == 8
    with Session(clean_db) as s:
        usage = get_limits(s, ch).usage
    assert usage is not None and (usage.new_chats_cap, usage.new_chats_used) == (8, 4)


async def test_typing_time_default_joins_texts_without_one(make_channel, clean_db: Engine,
                                                           database_url: str, sim, sim_url):
    ch = make_channel(base_url=sim_url)
    _limits(clean_db, ch, typing_time="2s")
    with Session(clean_db) as s, s.begin():
        enqueue_many(s, [TextMessage(ch, PHONES[0], "plain"), TextMessage(ch, PHONES[1], "own")])
    with clean_db.begin() as conn:  # a payload with its own typing_time keeps it
        conn.execute(text("UPDATE outbox.outbox_messages SET payload = payload || "
                          "'{\"typing_time\": 0}' WHERE payload->>'body' = 'own'"))
    await run_dispatcher(database_url, max_seconds=10)
    got = {r.body: r.payload.get("typing_time") for r in sim.sent()}
    assert got == {"plain": 2, "own": 0}


async def test_a_429_on_a_paced_channel_still_pauses_it(make_channel, clean_db: Engine,
                                                        database_url: str, sim, sim_url):
    from tests.dispatch_helpers import channel_tokens

    ch = make_channel(base_url=sim_url)
    _limits(clean_db, ch, per_second=5, per_day=100)
    sim.set_faults(token=channel_tokens(clean_db)[ch], error_status=429)
    _enqueue(clean_db, ch, PHONES[:3])
    summary = await run_dispatcher(database_url, max_seconds=10)
    assert summary.sent == 0 and ch in summary.paused_channels
    with clean_db.connect() as conn:
        row = conn.execute(text(
            "SELECT pause_cause, rate_limit_strikes, paused_until > now() AS later "
            "FROM outbox.channels")).one()
    assert (row.pause_cause, row.rate_limit_strikes, row.later) == ("rate_limit", 1, True)
    # The rows wait for the pause, their attempts given back; the budget
    # the claim spent is not (the requests did reach the provider).
    assert all(r.status == "queued" and r.attempts == 0 for r in _rows(clean_db))
    with Session(clean_db) as s:
        usage = get_limits(s, ch).usage
    assert usage is not None and usage.day_used >= 1


async def test_budget_spent_by_a_send_that_failed_transiently_is_not_given_back(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    from tests.dispatch_helpers import channel_tokens

    ch = make_channel(base_url=sim_url)
    _limits(clean_db, ch, per_day=2)
    token = channel_tokens(clean_db)[ch]
    sim.set_faults(token=token, error_status=503)
    _enqueue(clean_db, ch, PHONES[:2])
    await run_dispatcher(database_url, max_seconds=10)
    rows = _rows(clean_db)
    assert all(r.status == "queued" and r.attempts == 1 for r in rows)  # a retry each
    with Session(clean_db) as s:
        usage = get_limits(s, ch).usage
    assert usage is not None and (usage.day_used, usage.rows_left) == (2, 0)

    # The retries are due and the provider is fine again: the day is spent all the same.
    sim.clear_faults(token=token)
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.outbox_messages SET next_attempt_at = now()"))
    assert (await run_dispatcher(database_url, max_seconds=5)).claimed == 0
    _back_date_day(clean_db, ch)
    assert (await run_dispatcher(database_url, max_seconds=10)).sent == 2


# --- the property: whatever the interleaving, never over budget -----------------------


def _claim(engine: Engine, out: list[tuple[float, uuid.UUID, list[Any]]], lock: threading.Lock,
           per_channel: int, barrier: threading.Barrier | None) -> None:
    token = uuid.uuid4()
    with engine.connect() as conn:
        if barrier is not None:
            barrier.wait()
        rows = conn.execute(text(queries.CLAIM), {
            "per_channel": per_channel, "batch_size": 50, "claim_token": token,
            "lease_seconds": 600}).all()
        at = conn.execute(text("SELECT extract(epoch FROM now())")).scalar_one()
        conn.commit()
    with lock:
        out.append((float(at), token, rows))


def _complete_sent(engine: Engine, claims: list[tuple[float, uuid.UUID, list[Any]]]) -> None:
    """Record the claimed rows as sent, with the dispatcher's own statement
    (it dates each chat's latest message: the chat gap counts from it)."""
    done = [(r.id, token) for _, token, rows in claims for r in rows]
    if not done:
        return
    with engine.begin() as conn:
        conn.execute(text(queries.COMPLETE), {
            "ids": [i for i, _ in done], "claim_tokens": [t for _, t in done],
            "statuses": ["sent"] * len(done), "refunds": [0] * len(done),
            "delays": [0.0] * len(done), "errors": [None] * len(done),
            "wa_message_ids": [f"wa-{i}" for i, _ in done]})


@pytest.mark.slow  # over a second
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    rate=st.sampled_from([0.5, 1.0, 3.0, 7.5]),
    burst=st.integers(1, 8),
    per_minute=st.one_of(st.none(), st.integers(1, 30)),
    per_day=st.one_of(st.none(), st.integers(1, 40)),
    new_chats_per_day=st.one_of(st.none(), st.integers(0, 6)),
    chat_gap=st.one_of(st.none(), st.sampled_from([0.5, 1.5, 3.0])),
    steps=st.lists(st.tuples(st.integers(1, 4), st.floats(0.0, 2.0)), min_size=4, max_size=14),
)
def test_claims_never_exceed_the_budget(make_channel, clean_db: Engine, rate: float,
                                        burst: int, per_minute: int | None,
                                        per_day: int | None, new_chats_per_day: int | None,
                                        chat_gap: float | None,
                                        steps: list[tuple[int, float]]):
    """N workers claim at once (real connections, real locks), the rows
    they took are recorded as sent, then time passes (the bucket and the
    chats' latest messages are back-dated by that much). In virtual time,
    no window holds more than burst + rate * its length; no clock minute
    more than per_minute; the day no more than per_day, and no more new
    chats than new_chats_per_day; no two claims in one chat closer than
    the chat gap."""
    from tests.conftest import TABLES, truncate

    truncate(clean_db, TABLES)
    ch = make_channel()
    _limits(clean_db, ch, per_second=rate, burst=burst, per_minute=per_minute, per_day=per_day,
            new_chats_per_day=new_chats_per_day,
            chat_gap=None if chat_gap is None else f"{chat_gap}s")
    # 30 chats of 4 messages each, interleaved; the first 10 wrote to us
    # a day ago (known chats), the other 20 are new.
    phones = [f"+1555{5000000 + n:07d}" for n in range(30)]
    _enqueue(clean_db, ch, phones * 4)
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.chats SET last_message_at = now() - interval '1 day' "
                          "WHERE wa_chat_id = ANY(:known)"),
                     {"known": [f"{p[1:]}@s.whatsapp.net" for p in phones[:10]]})
        known = set(conn.execute(text(
            "SELECT id FROM outbox.chats WHERE last_message_at IS NOT NULL")).scalars())
    assert len(known) == 10
    claims: list[tuple[float, float, int]] = []  # (virtual time, real time, rows)
    chat_claims: dict[uuid.UUID, list[float]] = {}  # virtual claim times per chat
    shift = 0.0
    lock = threading.Lock()
    for workers, passes in steps:
        out: list[tuple[float, uuid.UUID, list[Any]]] = []
        barrier = threading.Barrier(workers)
        threads = [threading.Thread(target=_claim, args=(clean_db, out, lock, 10, barrier))
                   for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        claims += [(at + shift, at, len(rows)) for at, _, rows in out]
        for at, _, rows in out:
            for r in rows:
                chat_claims.setdefault(r.chat_id, []).append(at + shift)
        _complete_sent(clean_db, out)
        if passes:
            shift += passes
            with clean_db.begin() as conn:
                conn.execute(text(
                    "UPDATE outbox.channel_pacing SET refilled_at = refilled_at "
                    "- make_interval(secs => :s)"), {"s": passes})
                conn.execute(text(
                    "UPDATE outbox.chats SET last_message_at = last_message_at "
                    "- make_interval(secs => :s) WHERE last_message_at IS NOT NULL"),
                    {"s": passes})
    claims.sort()
    taken = [n for _, _, n in claims]
    assert sum(taken) > 0 or new_chats_per_day == 0
    for i in range(len(claims)):
        for j in range(i, len(claims)):
            window = claims[j][0] - claims[i][0]
            assert sum(taken[i:j + 1]) <= burst + rate * window + 1e-6, (claims, i, j)
    if per_day is not None:
        assert sum(taken) <= per_day
    if per_minute is not None:  # the minute counter follows the real clock
        by_minute: dict[int, int] = {}
        for _, real, n in claims:
            by_minute[int(real // 60)] = by_minute.get(int(real // 60), 0) + n
        assert max(by_minute.values(), default=0) <= per_minute, by_minute
    new_chats = len(set(chat_claims) - known)
    if new_chats_per_day is not None:
        assert new_chats <= new_chats_per_day
    if chat_gap is not None:
        for chat, times in chat_claims.items():
            gaps = [b - a for a, b in itertools.pairwise(sorted(times))]
            assert min(gaps, default=chat_gap) >= chat_gap - 1e-6, (chat, times)
    with clean_db.connect() as conn:
        budget = conn.execute(text(
            "SELECT day_count, day_new_chats FROM outbox.channel_pacing")).one()
    assert budget.day_count == sum(taken)
    if new_chats_per_day is not None:  # (counted only where capped)
        assert budget.day_new_chats == new_chats


# --- what an operator sees --------------------------------------------------------------


async def test_status_and_metrics_show_budget_and_rows_held_back(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url):
    from prometheus_client import generate_latest

    from outbox.admin.status import queue_status
    from outbox.metrics import build_registry

    capped = make_channel(name="capped", base_url=sim_url)
    paused = make_channel(name="paused", phone="+15550000002", base_url=sim_url)
    nochats = make_channel(name="nochats", phone="+15550000003", base_url=sim_url)
    gapped = make_channel(name="gapped", phone="+15550000004", base_url=sim_url)
    _limits(clean_db, capped, per_day=2)
    _limits(clean_db, paused, per_day=100)
    _enqueue(clean_db, capped, PHONES[:5])
    _enqueue(clean_db, gapped, [PHONES[20]])  # the chat's latest message, just now
    await run_dispatcher(database_url, max_seconds=10)
    _enqueue(clean_db, paused, PHONES[:3])
    with clean_db.begin() as conn:  # paused rows wait for the pause, not for pacing
        conn.execute(text("UPDATE outbox.channels SET status = 'paused' WHERE id = :id"),
                     {"id": paused})
    # A channel that opens no new chat: every row to a new chat waits.
    _limits(clean_db, nochats, new_chats_per_day=0)
    _enqueue(clean_db, nochats, PHONES[10:13])
    # Within the chat's gap: its two rows wait; a new chat's row doesn't.
    _limits(clean_db, gapped, chat_gap="1h")
    _enqueue(clean_db, gapped, [PHONES[20], PHONES[20], PHONES[21]])

    with Session(clean_db) as s:
        status = queue_status(s)
    by_name = {c.name: c.pacing for c in status.channels}
    assert by_name["paused"] is None
    got = {name: (p.rows_left, p.day_left, p.new_chats_left, p.held_back)
           for name, p in by_name.items() if p is not None}
    assert got == {"capped": (0, 0, None, 3), "nochats": (None, None, 0, 3),
                   "gapped": (None, None, None, 2)}
    assert {"rows_left": 0, "new_chats_left": None, "day_left": 0, "held_back": 3} in [
        c["pacing"] for c in status.as_dict()["channels"]]
    out = cli("status")
    assert out.returncode == 0, out.stderr
    assert "capped  now 0, today 0, held back 3" in out.stdout, out.stdout
    assert "nochats  now unlimited, today no cap, new chats 0, held back 3" in out.stdout
    assert "gapped  now unlimited, today no cap, held back 2" in out.stdout

    text_ = generate_latest(build_registry(clean_db, cache_seconds=0)).decode()
    assert f'outbox_pacing_held_back{{channel="{capped}"}} 3.0' in text_
    assert f'outbox_pacing_day_left{{channel="{capped}"}} 0.0' in text_
    assert f'outbox_pacing_budget_rows{{channel="{capped}"}} 0.0' in text_
    assert f'outbox_pacing_held_back{{channel="{nochats}"}} 3.0' in text_
    assert f'outbox_pacing_new_chats_left{{channel="{nochats}"}} 0.0' in text_
    assert f'outbox_pacing_held_back{{channel="{gapped}"}} 2.0' in text_
    assert f'channel="{paused}"}}' not in text_.split("outbox_pacing_budget_rows", 1)[1]


# --- a trial's daily limit -------------------------------------------------------------


@pytest.mark.parametrize(("message", "until_next_day"), [
    ("Daily message limit exceeded for trial", True),
    ("Trial limit: 150 messages per day reached", True),
    ("Trial limit exceeded: 5 chats per month", False),
    ("Trial limit exceeded", False),  # which one? a human looks
])
async def test_a_trial_daily_limit_pauses_until_the_next_utc_day(
        message: str, until_next_day: bool, make_channel, clean_db: Engine,
        database_url: str, sim, sim_url):
    from tests.dispatch_helpers import channel_tokens

    ch = make_channel(base_url=sim_url)
    sim.set_faults(token=channel_tokens(clean_db)[ch], error_status=402, error_message=message)
    _enqueue(clean_db, ch, PHONES[:3])
    await run_dispatcher(database_url, max_seconds=10)
    with clean_db.connect() as conn:
        row = conn.execute(text(
            "SELECT status, pause_cause, paused_until, "
            "(date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day') "
            "AT TIME ZONE 'UTC' AS midnight FROM outbox.channels")).one()
    assert (row.status, row.pause_cause) == ("paused", "trial_limit")
    assert row.paused_until == (row.midnight if until_next_day else None)
    assert all(r.status == "queued" and r.attempts == 0 for r in _rows(clean_db))
    if until_next_day:  # the day ends: the pause runs out like any timed one
        sim.reset()
        with clean_db.begin() as conn:
            conn.execute(text("UPDATE outbox.channels SET paused_until = now()"))
        assert (await run_dispatcher(database_url, max_seconds=10)).sent == 3
