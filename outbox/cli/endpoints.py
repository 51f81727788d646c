"""`outbox endpoints`: where a workspace's events are posted, signed
(status callbacks): add, list, enable, remove."""

from __future__ import annotations

import argparse
import sys

from outbox.cli.parser import EXIT_OK, Commands, subcommands
from outbox.cli.session import session_scope
from outbox.cli.table import print_table
from outbox.settings import Settings


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.endpoints import add_endpoint

    key = settings.require_encryption_key()
    with session_scope(settings) as session:
        new = add_endpoint(session, workspace_id=args.workspace, url=args.url,
                           event_types=args.types, encryption_key=key)
    print(new.secret)
    print(f"webhook endpoint {new.endpoint.id} for workspace {args.workspace!r} "
          f"({len(new.endpoint.event_types)} event types): the signing secret above is "
          "shown once, give it to the receiver now", file=sys.stderr)
    return EXIT_OK


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.endpoints import list_endpoints

    with session_scope(settings) as session:
        found = list_endpoints(session, workspace_id=args.workspace)
    print_table([(e.id, e.workspace_id, e.url, e.status, e.disabled_reason or "",
                  len(e.event_types), e.waiting, e.failed) for e in found],
                ["id", "workspace", "url", "status", "reason", "types", "waiting", "failed"])
    return EXIT_OK


def cmd_enable(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.endpoints import enable_endpoint

    with session_scope(settings) as session:
        enabled = enable_endpoint(session, args.endpoint_id, workspace_id=args.workspace,
                                  retry_failed=args.retry_failed)
    print(f"webhook endpoint {enabled.endpoint.id} active: {enabled.resumed} deliveries "
          "due now")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.endpoints import remove_endpoint

    with session_scope(settings) as session:
        remove_endpoint(session, args.endpoint_id, workspace_id=args.workspace)
    print(f"webhook endpoint {args.endpoint_id} removed")
    return EXIT_OK


def register(commands: Commands) -> None:
    group = subcommands(commands.add_parser(
        "endpoints", help="status callbacks: URLs the events are posted to, signed"),
        "endpoints_cmd")
    p = group.add_parser("add", help="add an endpoint; prints its signing secret once")
    p.add_argument("url", help="https URL (http only to localhost)")
    p.add_argument("--workspace", default="default")
    p.add_argument("--types", help="comma-separated event types (default: all)")
    p.set_defaults(handler=cmd_add)
    p = group.add_parser("list", help="list endpoints, their state and deliveries waiting")
    p.add_argument("--workspace")
    p.set_defaults(handler=cmd_list)
    p = group.add_parser("enable", help="make a disabled endpoint active again; its "
                         "waiting deliveries are sent")
    p.add_argument("endpoint_id")
    p.add_argument("--workspace")
    p.add_argument("--retry-failed", action="store_true",
                   help="send its dead-lettered deliveries again too")
    p.set_defaults(handler=cmd_enable)
    p = group.add_parser("remove", help="remove an endpoint and its deliveries")
    p.add_argument("endpoint_id")
    p.add_argument("--workspace")
    p.set_defaults(handler=cmd_remove)
