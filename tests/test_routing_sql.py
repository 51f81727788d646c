"""Can the hot statements be routed by channel? (docs/scale.md, "Past one
PostgreSQL").

Distributed over Citus by `channel_id` (`channels` by its `id`, `contacts` a
reference table), a statement goes to one shard group only if every
channel-scoped table it reads or writes is pinned to a channel by the
statement itself: a `channel_id` predicate on that reference (`id` for
`channels`), or `channel_id` among the columns it inserts. No EXPLAIN here
can check that (the tests run on plain PostgreSQL), so this reads the SQL
text: each reference to such a table, up to the next table reference, must
carry the predicate.

Not every reference does today. The ones that don't are listed in GAPS, each
with what the Citus layout does about it (docs/scale.md): the test fails when
a new unrouted reference appears, and also when a listed one gets its
predicate (then take it off the list, and the doc's table).
"""

from __future__ import annotations

import re

import pytest

from outbox.db import queries, webhook_queries

# Tables co-located by channel_id (channels: by id). contacts is workspace-wide:
# a reference table in that layout, so not checked.
CHANNEL_SCOPED = {"channels", "channel_tokens", "outbox_messages", "messages", "chats",
                  "webhook_status_backlog", "webhook_pending", "webhook_dead_letters"}

HOT = {
    "enqueue": queries.ENQUEUE,
    "claim": queries.CLAIM,
    "mark_sends_started": queries.MARK_SENDS_STARTED,
    "complete": queries.COMPLETE,
    "webhook_statuses": webhook_queries.APPLY_STATUSES,
    "webhook_message": webhook_queries.INSERT_MESSAGE,
    "webhook_chat": webhook_queries.INSERT_CHAT,
    "webhook_chat_lookup": webhook_queries.SELECT_CHAT,
}

# (statement, verb, table, alias) -> why it is not pinned to a channel yet.
GAPS = {
    ("enqueue", "FROM", "outbox_messages", "ob"):
        "the outbox row of a replayed idempotency key, looked up by message_id",
    ("claim", "FROM", "channels", "c"):
        "the claim picks channels itself, across all of them (one claim per shard group)",
    ("claim", "FROM", "outbox_messages", "o"):
        "the bounded per-channel scan re-reads its rows by address (ctid) and id",
    ("claim", "JOIN", "outbox_messages", "o"):
        "the head-of-line walk's rows, found by chat, joined back by id",
    ("claim", "FROM", "chats", "ch"):
        "pacing's new-chat and chat-gap probes read the chat by id",
    ("claim", "FROM", "outbox_messages", "e"):
        "the head-of-line probe looks up the chat's earlier rows by chat_id",
    ("claim", "UPDATE", "outbox_messages", "o"):
        "the claimed rows are updated by id",
    ("mark_sends_started", "UPDATE", "outbox_messages", ""):
        "rows marked by id",
    ("complete", "UPDATE", "outbox_messages", "o"):
        "rows completed by id and claim token",
    ("complete", "UPDATE", "messages", "m"):
        "the message row follows by id",
    ("complete", "UPDATE", "chats", "c"):
        "the chat follows by id",
    ("webhook_message", "UPDATE", "chats", "c"):
        "the chat is bumped by id",
    ("webhook_message", "JOIN", "chats", "c"):
        "the chat.reopened check reads the message's chat by id",
}

_REF = re.compile(
    r"\b(FROM|JOIN|UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+outbox\.(\w+)"
    r"(?:\s+(?:AS\s+)?(?!WHERE\b|SET\b|ON\b|USING\b|SELECT\b|VALUES\b|WITH\b)([a-z_]\w*)\b)?",
    re.IGNORECASE)


def _references(sql: str) -> list[tuple[str, str, str, str]]:
    """(verb, table, alias, text up to the next table reference) per reference."""
    found = list(_REF.finditer(sql))
    out = []
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(sql)
        verb = " ".join(m.group(1).upper().split())
        out.append((verb, m.group(2), m.group(3) or "", sql[m.end():end]))
    return out


def _pinned(verb: str, table: str, alias: str, scope: str) -> bool:
    column = "id" if table == "channels" else "channel_id"
    if verb == "INSERT INTO":
        columns = scope.split(")", 1)[0]
        return re.search(rf"\b{column}\b", columns) is not None
    qualified = rf"\b{re.escape(alias)}\.{column}" if alias else rf"(?<![.\w]){column}"
    predicate = rf"({qualified}\s*(=|\bIN\b)|=\s*{qualified}\b)"
    return re.search(predicate, scope, re.IGNORECASE) is not None


def _unpinned(name: str, sql: str) -> set[tuple[str, str, str, str]]:
    return {(name, verb, table, alias) for verb, table, alias, scope in _references(sql)
            if table in CHANNEL_SCOPED and not _pinned(verb, table, alias, scope)}


@pytest.mark.parametrize("name", sorted(HOT))
def test_hot_statements_are_pinned_to_a_channel_except_the_known_gaps(name: str) -> None:
    sql = HOT[name]
    refs = [r for r in _references(sql) if r[1] in CHANNEL_SCOPED]
    assert refs, f"{name}: no channel-scoped table found (is the parser still right?)"
    known = {k for k in GAPS if k[0] == name}
    assert _unpinned(name, sql) == known, (
        f"{name}: the references without a channel predicate changed; update GAPS and the "
        "routing table in docs/scale.md")


def test_the_check_tells_pinned_from_unpinned() -> None:
    # The same reference both ways, so a check that passes everything fails here.
    assert _unpinned("x", "SELECT 1 FROM outbox.chats c WHERE c.channel_id = :ch") == set()
    assert _unpinned("x", "SELECT 1 FROM outbox.chats c WHERE c.id = :id") == {
        ("x", "FROM", "chats", "c")}
    assert _unpinned("x", "UPDATE outbox.channels SET a = 1 WHERE id = :id") == set()
    assert _unpinned("x", "UPDATE outbox.channels SET a = 1 WHERE status = 'x'") == {
        ("x", "UPDATE", "channels", "")}
    assert _unpinned("x", "INSERT INTO outbox.messages (id, channel_id) VALUES (1, 2)") == set()
    assert _unpinned("x", "INSERT INTO outbox.messages (id, chat_id) VALUES (1, 2)") == {
        ("x", "INSERT INTO", "messages", "")}
    # contacts is a reference table: never a gap.
    assert _unpinned("x", "SELECT id FROM outbox.contacts WHERE phone = :p") == set()
