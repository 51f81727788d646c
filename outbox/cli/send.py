"""`outbox send`: queue a text message."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

from outbox.cli.parser import EXIT_OK, Commands
from outbox.cli.session import session_scope
from outbox.errors import InvalidSchedule
from outbox.settings import Settings


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.enqueue import enqueue_text

    send_at = _parse_when(args.at) if args.at else None
    with session_scope(settings) as session:
        result = enqueue_text(
            session, channel_id=args.channel, to=args.to, body=args.text,
            idempotency_key=args.idempotency_key, priority=args.priority, send_at=send_at,
            default_region=settings.default_region, max_attempts=settings.max_attempts,
        )
    print(result.message_id)
    if result.duplicate:
        print("note: idempotency key already used; nothing new was queued", file=sys.stderr)
    return EXIT_OK


def _parse_when(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidSchedule(f"--at {value!r} is not an ISO 8601 time", field="send_at") from None
    return when


def register(commands: Commands) -> None:
    p = commands.add_parser("send", help="queue a text message; prints its id")
    p.add_argument("--channel", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--idempotency-key")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--at", help="ISO 8601 time with timezone, e.g. 2026-01-31T09:00:00+00:00")
    p.set_defaults(handler=cmd_send)
