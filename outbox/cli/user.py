"""`outbox user`: people who sign in to a workspace's console (add, list,
disable). A role gives the scopes (outbox/admin/access.py)."""

from __future__ import annotations

import argparse
import getpass
import sys

from outbox.cli.parser import EXIT_OK, Commands, subcommands
from outbox.cli.session import session_scope
from outbox.cli.table import print_table
from outbox.settings import Settings


def _read_password() -> str:
    """From a terminal: asked twice, not echoed. Otherwise the first line of
    standard input (never an argument, where ps and shell history see it)."""
    from outbox.errors import InvalidInput

    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise InvalidInput("the two passwords differ", field="password")
        return password
    return sys.stdin.readline().rstrip("\r\n")


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.users import create_user

    password = _read_password()
    with session_scope(settings) as session:
        user = create_user(session, workspace_id=args.workspace, email=args.email,
                           role=args.role, password=password)
    print(user.id)
    print(f"user {user.email} ({user.role}) added to workspace {user.workspace_id!r}",
          file=sys.stderr)
    return EXIT_OK


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.users import list_users

    with session_scope(settings) as session:
        users = list_users(session, workspace_id=args.workspace)
    print_table([(u.id, u.workspace_id, u.email, u.role,
                  u.created_at.isoformat(timespec="seconds"),
                  u.disabled_at.isoformat(timespec="seconds") if u.disabled_at else "")
                 for u in users], ["id", "workspace", "email", "role", "created", "disabled"])
    return EXIT_OK


def cmd_disable(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.users import disable_user

    with session_scope(settings) as session:
        user = disable_user(session, workspace_id=args.workspace, email=args.email)
    print(f"user {user.email} disabled in workspace {user.workspace_id!r}; "
          "their sessions are ended")
    return EXIT_OK


def register(commands: Commands) -> None:
    from outbox.db.states import Role

    users = subcommands(commands.add_parser("user", help="console users"), "user_cmd")
    p = users.add_parser("add", help="add a user (password on standard input); prints its id")
    p.add_argument("--workspace", required=True)
    p.add_argument("--email", required=True)
    p.add_argument("--role", required=True, choices=[r.value for r in Role],
                   help="viewer: read; agent: read, send, work chats; admin: everything")
    p.set_defaults(handler=cmd_add)
    p = users.add_parser("list", help="list users (never their passwords)")
    p.add_argument("--workspace")
    p.set_defaults(handler=cmd_list)
    p = users.add_parser("disable", help="disable a user and end their sessions")
    p.add_argument("--workspace", required=True)
    p.add_argument("--email", required=True)
    p.set_defaults(handler=cmd_disable)
