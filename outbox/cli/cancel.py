"""`outbox cancel`: take back a queued message before the dispatcher sends it, or a
dead letter."""

from __future__ import annotations

import argparse

from outbox.cli.parser import EXIT_OK, Commands
from outbox.cli.session import session_scope
from outbox.settings import Settings


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.messages import cancel

    with session_scope(settings) as session:
        cancel(session, args.message_id, workspace_id=args.workspace)
    print(f"message {args.message_id} cancelled")
    return EXIT_OK


def register(commands: Commands) -> None:
    p = commands.add_parser("cancel", help="cancel a queued message or a dead letter (never sent)")
    p.add_argument("message_id")
    p.add_argument("--workspace", help="only a message of this workspace")
    p.set_defaults(handler=cmd_cancel)
