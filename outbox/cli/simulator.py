"""`outbox simulator`: the Whapi simulator as an HTTP server."""

from __future__ import annotations

import argparse

from outbox.cli.parser import EXIT_OK, Commands
from outbox.settings import Settings


def cmd_simulator(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.providers.simulator.app import serve

    serve(host=args.host, port=args.port, accept_any_token=args.accept_any_token)
    return EXIT_OK


def register(commands: Commands) -> None:
    p = commands.add_parser("simulator", help="run the Whapi simulator (an HTTP server)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--accept-any-token", action="store_true",
                   help="make any Bearer token a channel on first use (default: like Whapi, "
                        "401 for tokens not registered with POST /_sim/channels)")
    p.set_defaults(handler=cmd_simulator)
