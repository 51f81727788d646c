"""`outbox chats`: conversations (list, archive, unarchive, read)."""

from __future__ import annotations

import argparse
import json
import sys

from outbox.cli.parser import EXIT_OK, Commands, subcommands
from outbox.cli.session import session_scope
from outbox.cli.table import print_table
from outbox.settings import Settings


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.chats import list_chats

    with session_scope(settings) as session:
        page = list_chats(session, workspace_id=args.workspace, channel_id=args.channel,
                          unread_only=args.unread, archived=args.archived, limit=args.limit,
                          cursor=args.cursor)
    if args.json:
        print(json.dumps({"chats": [c.as_dict() for c in page.chats],
                          "next_cursor": page.next_cursor}, indent=2))
        return EXIT_OK
    print_table([(c.id, c.phone, c.name or "", c.unread_count,
                  c.last_message_at.isoformat(timespec="seconds") if c.last_message_at else "",
                  (c.last_message_preview or "")[:40], c.status) for c in page.chats],
                ["id", "contact", "name", "unread", "last_message_at", "last_message", "status"])
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
    return EXIT_OK


def cmd_archive(args: argparse.Namespace, settings: Settings) -> int:
    """`chats archive` and `chats unarchive`."""
    from outbox.admin.chats import archive_chat, unarchive_chat

    change = unarchive_chat if args.chats_cmd == "unarchive" else archive_chat
    with session_scope(settings) as session:
        status = change(session, args.chat_id, workspace_id=args.workspace)
    print(f"chat {args.chat_id} {status}")
    return EXIT_OK


def cmd_read(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.chats import mark_chat_read

    with session_scope(settings) as session:
        n = mark_chat_read(session, args.chat_id, workspace_id=args.workspace)
    print(f"chat {args.chat_id} read ({n} message{'s' if n != 1 else ''} marked read)")
    return EXIT_OK


def register(commands: Commands) -> None:
    chats = subcommands(commands.add_parser("chats", help="conversations"), "chats_cmd")
    p = chats.add_parser("list", help="chats, newest message first")
    p.add_argument("--unread", action="store_true", help="only chats with unread messages")
    p.add_argument("--archived", action="store_true", help="archived chats instead of active")
    p.add_argument("--channel", help="only this channel")
    p.add_argument("--workspace")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor", help="the cursor the previous page printed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_list)
    for name, help_text, handler in (
        ("archive", "archive a chat (a new inbound message reopens it)", cmd_archive),
        ("unarchive", "make an archived chat active again", cmd_archive),
        ("read", "mark a chat read (unread count to 0)", cmd_read),
    ):
        p = chats.add_parser(name, help=help_text)
        p.add_argument("chat_id")
        p.add_argument("--workspace")
        p.set_defaults(handler=handler)
