"""A chat with a long backlog behind a row in flight: the claim neither
walks that backlog (it looks at a bounded number of rows per channel) nor
leaves the channel's other chats waiting behind it (it samples the first
row of other chats)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.db import queries
from outbox.enqueue import enqueue_many
from outbox.message_types import TextMessage

BACKLOG = 400  # more than the claim looks at on a channel with per_channel 10 (104)
PER_CHANNEL = 10


def _claim(engine: Engine, *, batch: int = 50) -> list[Any]:
    with engine.begin() as conn:
        return list(conn.execute(text(queries.CLAIM), {
            "per_channel": PER_CHANNEL, "batch_size": batch, "claim_token": uuid.uuid4(),
            "lease_seconds": 600}))


def _fill(engine: Engine, channel: uuid.UUID, others: int) -> tuple[uuid.UUID, set[str]]:
    """The long chat first (so its rows come first in due order), then one
    message to each of `others` chats; the long chat's first row in flight."""
    long = [TextMessage(channel, "+15557000000", f"long{n:04d}") for n in range(BACKLOG)]
    rest = [TextMessage(channel, f"+1555701{n:04d}", f"other{n:03d}") for n in range(others)]
    with Session(engine) as s, s.begin():
        enqueue_many(s, long)
    with Session(engine) as s, s.begin():
        enqueue_many(s, rest)
    with engine.begin() as conn:
        chat = conn.execute(text(
            "UPDATE outbox.outbox_messages SET status = 'sending', attempts = 1, "
            "claim_token = gen_random_uuid(), locked_until = now() + interval '1 hour' "
            "WHERE id = (SELECT min(id) FROM outbox.outbox_messages) RETURNING chat_id"
        )).scalar_one()
    return chat, {m.body for m in rest}


def test_the_chats_behind_a_long_blocked_backlog_still_go(make_channel, clean_db: Engine):
    ch = make_channel()
    long_chat, others = _fill(clean_db, ch, others=25)
    claimed: list[Any] = []
    for _ in range(6):  # 25 rows at 10 a claim: 3 claims, with room for samples missing some
        claimed += _claim(clean_db)
    assert all(r.chat_id != long_chat for r in claimed), "a row of the blocked chat"
    assert {r.payload["body"] for r in claimed} == others


def test_a_full_batch_still_makes_room_for_the_chats_behind(make_channel, clean_db: Engine):
    """Other channels fill the batch by themselves: the blocked channel's
    other chats still get rows in it."""
    blocked = make_channel(name="blocked")
    busy = [make_channel(name=f"busy{i}", phone=f"+1555000100{i}") for i in range(3)]
    _, others = _fill(clean_db, blocked, others=25)
    with Session(clean_db) as s, s.begin():
        enqueue_many(s, [TextMessage(b, f"+1555702{n:04d}", f"busy{i}-{n}")
                         for i, b in enumerate(busy) for n in range(60)])
    got: set[str] = set()
    for _ in range(6):
        rows = _claim(clean_db, batch=20)  # less than the busy channels' share
        assert len(rows) == 20
        got |= {r.payload["body"] for r in rows if r.channel_id == blocked}
    assert got and got <= others
