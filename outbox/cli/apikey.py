"""`outbox apikey`: keys for the HTTP API (create, list, revoke)."""

from __future__ import annotations

import argparse
import sys

from outbox.cli.parser import EXIT_OK, Commands, subcommands
from outbox.cli.session import session_scope
from outbox.cli.table import print_table
from outbox.settings import Settings


def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.apikeys import create_api_key

    with session_scope(settings) as session:
        key = create_api_key(session, workspace_id=args.workspace, name=args.name,
                             scopes=args.scope)
    print(key.key)
    print(f"API key {key.id} for workspace {key.workspace_id!r} (scopes: "
          f"{','.join(sorted(key.scopes))}): shown once, store it now (only a hash is kept)",
          file=sys.stderr)
    return EXIT_OK


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.apikeys import list_api_keys

    with session_scope(settings) as session:
        keys = list_api_keys(session, workspace_id=args.workspace)
    print_table([(k.id, k.workspace_id, k.name or "", f"wo_{k.prefix}_…",
                  ",".join(sorted(k.scopes)), k.created_at.isoformat(timespec="seconds"),
                  k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "")
                 for k in keys],
                ["id", "workspace", "name", "key", "scopes", "created", "revoked"])
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.apikeys import revoke_api_key

    with session_scope(settings) as session:
        revoke_api_key(session, args.key_id)
    print(f"API key {args.key_id} revoked")
    return EXIT_OK


def register(commands: Commands) -> None:
    keys = subcommands(commands.add_parser("apikey", help="HTTP API keys"), "apikey_cmd")
    p = keys.add_parser("create", help="create a key for a workspace; prints it once")
    p.add_argument("--workspace", required=True)
    p.add_argument("--name", help="what the key is for")
    p.add_argument("--scope", default="send,read",
                   help="what the key may do, comma-separated: read, send, chats, admin "
                        "(admin includes the others; default: send,read)")
    p.set_defaults(handler=cmd_create)
    p = keys.add_parser("list", help="list keys (never the keys themselves)")
    p.add_argument("--workspace")
    p.set_defaults(handler=cmd_list)
    p = keys.add_parser("revoke", help="revoke a key by id")
    p.add_argument("key_id")
    p.set_defaults(handler=cmd_revoke)
