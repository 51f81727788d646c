"""`outbox serve`: the HTTP service (API, webhooks, cron, metrics)."""

from __future__ import annotations

import argparse

from outbox.cli.parser import EXIT_OK, Commands
from outbox.settings import Settings


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from outbox.api import create_app

    host = args.host or settings.http_host
    port = args.port if args.port is not None else settings.http_port
    # log_config=None: uvicorn's records go through our logging (structlog,
    # redaction) instead of its own handlers.
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None,
                access_log=False)
    return EXIT_OK


def register(commands: Commands) -> None:
    p = commands.add_parser("serve", help="run the HTTP service (API, webhooks, cron, metrics)")
    p.add_argument("--host", help="listen address (default: OUTBOX_HTTP_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: OUTBOX_HTTP_PORT, 8080)")
    p.set_defaults(handler=cmd_serve)
