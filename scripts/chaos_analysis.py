"""What a chaos run proves: pure functions over the simulator's records, the
database's final rows and what the harness observed (scripts/chaos.py).

Nothing here touches a database or the network, so the rules can be read
(and checked) on their own:

* lost:       a committed message that the simulator never accepted and
              that the database does not account for (not `failed`, not
              still `queued`/`sending`). Also a row the database calls
              `sent` that the simulator never saw, and an enqueued body
              with no row at all.
* duplicate:  a body the simulator accepted more than once.
* order:      per chat (token, to), enqueue order is the body's index. A
              violation is a consecutive pair (k, k+1) of the chat's
              delivered messages whose FIRST arrivals are inverted; a
              re-send of k after k+1 (a duplicate) is not one.
* pause:      an accepted send to a channel inside a window in which the
              channel was paused, past the in-flight grace (see
              `pause_windows` and `pause_violations`).
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Rec:
    """One accepted send, as the simulator recorded it."""

    seq: int
    token: str
    to: str
    body: str
    received_at: float  # unix seconds (the simulator's clock, same host as PostgreSQL)
    wa_id: str


@dataclass(frozen=True, slots=True)
class Row:
    """One outbox row at the end of the run (joined with its message)."""

    body: str
    outbox_id: int
    status: str  # outbox_messages.status
    attempts: int
    last_error: str | None
    message_status: str  # messages.status
    wa_message_id: str | None


@dataclass(frozen=True, slots=True)
class PauseObservation:
    """A `channels` row the poller saw paused."""

    channel: str  # the channel's token (what the simulator records carry)
    status: str
    paused_from: float  # channels.updated_at of the pausing write (its transaction's now())
    paused_until: float | None  # None: paused without a time (401/402, operator)
    seen_at: float  # clock_timestamp() of the poll
    reason: str | None


@dataclass(slots=True)
class Window:
    channel: str
    start: float
    end: float
    reasons: set[str] = field(default_factory=set)


# --- delivery -------------------------------------------------------------------------


def index_of(body: str) -> int:
    """`chaos-0001234` -> 1234."""
    return int(body.rsplit("-", 1)[1])


def delivery(expected: Sequence[str], records: Sequence[Rec], rows: Sequence[Row]
             ) -> dict[str, Any]:
    """Enqueued vs. accepted vs. the database's verdict, body by body."""
    expected_set = set(expected)
    by_body: dict[str, list[Rec]] = defaultdict(list)
    for r in records:
        by_body[r.body].append(r)
    rows_by_body = {row.body: row for row in rows}
    delivered = expected_set & by_body.keys()
    foreign = sorted(by_body.keys() - expected_set)
    missing_rows = sorted(expected_set - rows_by_body.keys())

    cat: Counter[str] = Counter()
    lost_examples: list[dict[str, Any]] = []
    for body in expected:
        row = rows_by_body.get(body)
        got = body in delivered
        status = row.status if row else "no row"
        cat[f"{'delivered' if got else 'undelivered'}/{status}"] += 1
        if (not got and status not in ("failed", "queued", "sending")
                and len(lost_examples) < 20):
            lost_examples.append({"body": body, "status": status,
                                  "last_error": row.last_error if row else None,
                                  "attempts": row.attempts if row else None})

    unique_sent = len(delivered)
    failed_total = sum(1 for r in rows if r.status == "failed")
    failed_undelivered = cat["undelivered/failed"]
    failed_delivered = cat["delivered/failed"]
    still = {s: sum(1 for r in rows if r.status == s) for s in ("queued", "sending")}
    still_undelivered = cat["undelivered/queued"] + cat["undelivered/sending"]
    lost = len(expected) - unique_sent - failed_undelivered - still_undelivered

    # Cross-checks: the database says sent -> the simulator has it, with the
    # WhatsApp id the database recorded; outbox row and message agree.
    ids_by_body: dict[str, set[str]] = {b: {r.wa_id for r in recs} for b, recs in by_body.items()}
    db_sent = [r for r in rows if r.status == "sent"]
    phantom = [r.body for r in db_sent if r.body not in delivered]
    wrong_id = [r.body for r in db_sent
                if r.body in delivered and r.wa_message_id not in ids_by_body[r.body]]
    mismatch = Counter(f"{r.status}->{r.message_status}" for r in rows
                       if (r.status == "sent") != (r.message_status == "sent")
                       or (r.status == "failed") != (r.message_status == "failed"))
    failed_reasons = Counter(reason_prefix(r.last_error) for r in rows if r.status == "failed")
    # A dead letter the provider did accept (an earlier attempt's answer was
    # lost): `outbox retry` of it would send it again.
    failed_delivered_examples = [
        {"body": r.body, "attempts": r.attempts, "last_error": r.last_error,
         "copies": len(by_body[r.body]),
         "accepted_at": [round(x.received_at, 3) for x in by_body[r.body]]}
        for r in rows if r.status == "failed" and r.body in delivered][:10]
    return {
        "enqueued": len(expected),
        "rows_in_db": len(rows),
        "bodies_without_row": len(missing_rows),
        "sent_unique": unique_sent,
        "accepted_records": len(records),
        "failed": failed_total,
        "failed_but_delivered": failed_delivered,
        "failed_reasons": dict(failed_reasons.most_common()),
        "failed_but_delivered_examples": failed_delivered_examples,
        "still_queued": still["queued"],
        "still_sending": still["sending"],
        "still_queued_or_sending_but_delivered": (cat["delivered/queued"]
                                                  + cat["delivered/sending"]),
        "lost": lost,
        "lost_examples": lost_examples,
        "db_sent_not_in_simulator": len(phantom),
        "db_sent_wrong_wa_message_id": len(wrong_id),
        "outbox_vs_message_status_mismatch": dict(mismatch),
        "foreign_bodies_in_simulator": len(foreign),
        "categories": dict(sorted(cat.items())),
    }


def reason_prefix(error: str | None, width: int = 72) -> str:
    if not error:
        return "(no last_error)"
    one = " ".join(error.split())
    return one if len(one) <= width else one[:width - 3] + "..."


# --- duplicates -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kill:
    at: float  # unix time of the SIGKILL
    pid: int
    sending_at_kill: int  # rows `sending` (all workers) right after it
    # Of those, the ones still `sending` under the same claim token and with
    # the same lease end a client timeout (+0.5 s) later: no live worker's
    # heartbeat (every lease/3) extended them, so they are the dead worker's
    # rows, waiting for their lease.
    orphaned_bodies: frozenset[str]
    # Of the orphaned, those whose request had started (send_started_at set;
    # the dead worker can set no more): their rescue keeps the attempt spent,
    # the others get it back. Code before send_started_at refunded none.
    started_bodies: frozenset[str] = frozenset()


def duplicates(
    records: Sequence[Rec],
    rows: Sequence[Row],
    *,
    kills: Sequence[Kill],
    after_send_phases: Sequence[tuple[float, float]],
    terminations: Sequence[float],
    client_timeout: float,
) -> dict[str, Any]:
    """Bodies accepted more than once, each put down to the likeliest cause:

    kill             the row was orphaned by a SIGKILL (`sending` right before it
                     and still `sending` under the same claim token a client
                     timeout later) and its first copy reached the simulator
                     before that kill (+0.5 s: the simulator stamps
                     `received_at` when its handler runs, which lags the
                     socket when the machine is saturated);
    hang_after_send  its first copy arrived while the simulator's hangs were
                     `hang_after_send` (accepted, then never answered), and the
                     next copy came at least a client timeout later;
    db_terminate     its first copy arrived within [t - timeout, t + lease] of
                     the pg_terminate_backend (the completion could not commit);
    other            none of these (e.g. a lease lost to a starved heartbeat, a
                     response slower than the client timeout): listed with the
                     row's last_error.
    """
    by_body: dict[str, list[Rec]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.seq):
        by_body[r.body].append(r)
    rows_by_body = {row.body: row for row in rows}
    causes: Counter[str] = Counter()
    other: list[dict[str, Any]] = []
    dup_bodies = 0
    extra = 0
    kill_lags: list[float] = []
    per_kill: Counter[float] = Counter()
    slow: list[tuple[float, str, int]] = []
    for body, recs in by_body.items():
        if len(recs) < 2:
            continue
        dup_bodies += 1
        extra += len(recs) - 1
        first, second = recs[0], recs[1]
        cause = "other"
        killer = next((k for k in kills
                       if body in k.orphaned_bodies and first.received_at <= k.at + 0.5), None)
        if killer is not None:
            cause = "kill"
            # How long before the kill the provider had accepted it: the
            # window in which the completion had not committed yet.
            kill_lags.append(killer.at - first.received_at)
            per_kill[killer.at] += 1
            slow.append((killer.at - first.received_at, body, killer.pid))
        elif (any(a <= first.received_at < b for a, b in after_send_phases)
              and second.received_at - first.received_at >= client_timeout * 0.9):
            cause = "hang_after_send"
        elif any(t - client_timeout <= first.received_at <= t + 10 for t in terminations):
            cause = "db_terminate"
        causes[cause] += 1
        if cause == "other" and len(other) < 20:
            row = rows_by_body.get(body)
            other.append({"body": body, "copies": len(recs),
                          "gaps_s": [round(b.received_at - a.received_at, 3)
                                     for a, b in itertools.pairwise(recs)],
                          "status": row.status if row else None,
                          "attempts": row.attempts if row else None,
                          "last_error": row.last_error if row else None})
    return {
        "duplicate_bodies": dup_bodies,
        "extra_sends": extra,
        "by_cause": dict(causes.most_common()),
        "other_examples": other,
        "kill_accept_to_kill_seconds": _quantiles(kill_lags),
        "per_kill": [{"pid": k.pid, "orphaned": len(k.orphaned_bodies),
                      "started": len(k.started_bodies), "duplicates": per_kill[k.at]}
                     for k in sorted(kills, key=lambda k: k.at)],
        "slowest_kill_duplicates": [{"seconds": round(lag, 3), "body": b, "killed_pid": pid}
                                    for lag, b, pid in sorted(slow, reverse=True)[:5]],
    }


def kill_attempts(kills: Sequence[Kill]) -> dict[str, Any]:
    """The attempts the SIGKILLs cost: each kill's orphaned rows whose request
    had started (the rescuer keeps their attempt spent). The rescuers' own
    totals also count leases lost otherwise (a terminated connection, a
    starved heartbeat), which would overstate what a kill costs."""
    orphaned = sum(len(k.orphaned_bodies) for k in kills)
    spent = sum(len(k.started_bodies) for k in kills)
    return {"orphaned": orphaned, "orphaned_never_started": orphaned - spent,
            "attempts_spent_by_kills": spent,
            "attempts_spent_per_kill": round(spent / max(len(kills), 1), 2)}


def _quantiles(xs: Sequence[float]) -> dict[str, float]:
    if not xs:
        return {}
    xs = sorted(xs)

    def pick(q: float) -> float:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 3)

    return {"n": len(xs), "p10": pick(0.1), "p50": pick(0.5), "p90": pick(0.9),
            "max": round(xs[-1], 3)}


# --- order ----------------------------------------------------------------------------


def order_violations(records: Sequence[Rec]) -> dict[str, Any]:
    """Per (token, to): the first arrival of each body, in enqueue (index) order."""
    first_seq: dict[str, int] = {}
    chat_of: dict[str, tuple[str, str]] = {}
    for r in records:
        if r.body not in first_seq or r.seq < first_seq[r.body]:
            first_seq[r.body] = r.seq
            chat_of[r.body] = (r.token, r.to)
    per_chat: dict[tuple[str, str], list[tuple[int, int, str]]] = defaultdict(list)
    for body, seq in first_seq.items():
        per_chat[chat_of[body]].append((index_of(body), seq, body))
    violations = 0
    examples: list[dict[str, Any]] = []
    chats_bad: set[tuple[str, str]] = set()
    for chat, items in per_chat.items():
        items.sort()
        for (_k, seq_k, body_k), (_, seq_next, body_next) in itertools.pairwise(items):
            if seq_k > seq_next:
                violations += 1
                chats_bad.add(chat)
                if len(examples) < 10:
                    examples.append({"to": chat[1], "earlier": body_k, "later": body_next,
                                     "earlier_first_seq": seq_k, "later_first_seq": seq_next})
    return {"violations": violations, "chats_checked": len(per_chat),
            "chats_with_violations": len(chats_bad), "examples": examples}


def enqueue_order_mismatches(rows: Sequence[Row], chat_of_body: Mapping[str, str]) -> int:
    """The premise of the order check: per chat, outbox ids grow with the index."""
    per_chat: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for row in rows:
        per_chat[chat_of_body[row.body]].append((row.outbox_id, index_of(row.body)))
    bad = 0
    for items in per_chat.values():
        items.sort()
        bad += sum(1 for a, b in itertools.pairwise(items) if a[1] > b[1])
    return bad


# --- pauses ---------------------------------------------------------------------------


def pause_windows(observations: Iterable[PauseObservation]) -> dict[str, list[Window]]:
    """Each distinct pausing write the poller saw is the window
    [updated_at of that write, paused_until]; a pause without a time lasts
    until the last poll that still saw it. Overlapping or touching windows of
    one channel are merged (an extension does not start a new pause)."""
    raw: dict[str, dict[tuple[float, float | None], Window]] = defaultdict(dict)
    for ob in observations:
        key = (ob.paused_from, ob.paused_until)
        end = ob.paused_until if ob.paused_until is not None else ob.seen_at
        w = raw[ob.channel].get(key)
        if w is None:
            w = raw[ob.channel][key] = Window(ob.channel, ob.paused_from, end)
        w.end = max(w.end, end)
        w.reasons.add(ob.reason or ob.status)
    merged: dict[str, list[Window]] = {}
    for channel, ws in raw.items():
        out: list[Window] = []
        for w in sorted(ws.values(), key=lambda w: w.start):
            if out and w.start <= out[-1].end:
                out[-1].end = max(out[-1].end, w.end)
                out[-1].reasons |= w.reasons
            else:
                out.append(Window(channel, w.start, w.end, set(w.reasons)))
        merged[channel] = out
    return merged


def pause_violations(records: Sequence[Rec], windows: Mapping[str, list[Window]], *,
                     grace: float) -> dict[str, Any]:
    """An accepted send to channel C whose `received_at` lies in
    [window.start + grace, window.end) of a merged pause window of C.

    Sends in [start, start + grace) are the in-flight tail, counted apart:
    requests that left before the pause was committed and visible (the
    pausing transaction's now() is a little before its commit), or rows
    another worker had claimed before it and sent within its client timeout.
    """
    starts = {c: [w.start for w in ws] for c, ws in windows.items()}
    bad = 0
    tail = 0
    examples: list[dict[str, Any]] = []
    max_into = 0.0
    for r in records:
        ws = windows.get(r.token)
        if not ws:
            continue
        i = bisect.bisect_right(starts[r.token], r.received_at) - 1
        if i < 0:
            continue
        w = ws[i]
        if not (w.start <= r.received_at < w.end):
            continue
        into = r.received_at - w.start
        if into < grace:
            tail += 1
            max_into = max(max_into, into)
            continue
        bad += 1
        if len(examples) < 10:
            examples.append({"body": r.body, "seconds_into_pause": round(into, 3),
                             "seconds_before_end": round(w.end - r.received_at, 3),
                             "reasons": sorted(w.reasons)})
    total_windows = sum(len(ws) for ws in windows.values())
    paused_seconds = sum(w.end - w.start for ws in windows.values() for w in ws)
    return {
        "violations": bad,
        "in_flight_tail": tail,
        "tail_max_seconds_into_pause": round(max_into, 3),
        "grace_seconds": grace,
        "windows": total_windows,
        "channels_paused": len(windows),
        "paused_channel_seconds": round(paused_seconds, 1),
        "examples": examples,
    }
