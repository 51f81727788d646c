"""`outbox status` (queue counts, pauses, dead letters, warnings about the
hot tables' statistics and autovacuum) and `outbox retry`
(requeue the dead letters status lists)."""

from __future__ import annotations

import argparse
import json

from outbox.cli.parser import EXIT_OK, Commands
from outbox.cli.session import session_scope
from outbox.cli.table import print_table
from outbox.settings import Settings
from outbox.states import OutboxStatus


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.status import queue_status

    with session_scope(settings) as session:
        status = queue_status(session, workspace_id=args.workspace)
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
        return EXIT_OK
    rows: list[tuple[object, ...]] = []
    for c in status.channels:
        state = c.status
        if c.paused_until is not None:
            state += f" until {c.paused_until.isoformat(timespec='seconds')}"
        rows.append((c.name, c.id, state, *(c.counts.get(s, 0) for s in OutboxStatus),
                     c.pause_reason or ""))
    t = status.totals()
    rows.append(("TOTAL", "", "", *(t[s] for s in OutboxStatus), ""))
    print_table(rows, ["channel", "id", "state", *OutboxStatus, "reason"])
    paced = [c for c in status.channels if c.pacing is not None]
    if paced:
        print("pacing (rows a claim may take now; left today; new chats left today; "
              "due rows held back):")
        for c in paced:
            p = c.pacing
            assert p is not None
            now = "unlimited" if p.rows_left is None else str(p.rows_left)
            day = "no cap" if p.day_left is None else str(p.day_left)
            chats = "" if p.new_chats_left is None else f", new chats {p.new_chats_left}"
            print(f"  {c.name}  now {now}, today {day}{chats}, held back {p.held_back}")
    oldest = status.oldest_due_seconds
    print(f"oldest due message waiting: {oldest:.1f}s" if oldest is not None
          else "nothing due")
    if status.dead_letters:
        print(f"dead letters (latest {len(status.dead_letters)}; requeue with: outbox retry):")
        for d in status.dead_letters:
            print(f"  {d['message_id']}  to {d['to']}  after {d['attempts']} attempts: "
                  f"{d['error']}")
    if status.webhook_dead_letters:
        latest = status.webhook_dead_letter_latest
        print(f"webhook bodies kept unused: {status.webhook_dead_letters} (latest "
              f"{latest.isoformat(timespec='seconds') if latest else '?'}; "
              "table webhook_dead_letters)")
    for warning in status.warnings():
        print(f"warning: {warning}")
    if status.callbacks:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(status.callbacks.items()))
        print(f"status callbacks: {counts}")
    for e in status.endpoints_disabled:
        print(f"webhook endpoint {e['id']} disabled ({e['reason']}): {e['url']}")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.status import retry_failed

    with session_scope(settings) as session:
        n = retry_failed(session, channel_id=args.channel, message_id=args.message)
    print(f"requeued {n} failed message{'s' if n != 1 else ''}")
    return EXIT_OK


def register(commands: Commands) -> None:
    p = commands.add_parser("status", help="queue counts per channel, pauses, dead letters")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)

    p = commands.add_parser("retry", help="requeue failed (dead-lettered) messages")
    p.add_argument("--channel", help="only this channel")
    p.add_argument("--message", help="only this message id")
    p.set_defaults(handler=cmd_retry)
