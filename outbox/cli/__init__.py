"""`outbox`: the command line. Thin: parse, call a service function, print.

One module per command group; each adds its commands with `register`:

    db        upgrade | downgrade | url | current | grants        cli/db.py
    channel   add | list | pause | resume | webhook-info          cli/channel.py
    send                                                          cli/send.py
    run, dispatch --once                                          cli/dispatch.py
    status, retry                                                 cli/status.py
    cancel                                                        cli/cancel.py
    simulator                                                     cli/simulator.py
    serve                                                         cli/serve.py
    apikey    create | list | revoke                              cli/apikey.py
    user      add | list | disable                                cli/user.py
    chats     list | archive | unarchive | read                   cli/chats.py
    tokens    rotate-key | check                                  cli/tokens.py
    keys      generate                                            cli/keys.py
    alive                                                         cli/alive.py
    endpoints add | list | enable | remove                        cli/endpoints.py

Exit codes: 0 ok, 1 unexpected failure, 2 bad input or configuration (one
line on stderr, nothing changed).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from outbox.cli import (
    alive,
    apikey,
    cancel,
    channel,
    chats,
    db,
    dispatch,
    endpoints,
    keys,
    send,
    serve,
    simulator,
    status,
    tokens,
    user,
)
from outbox.cli.parser import EXIT_USAGE, CommandParser, Handler, subcommands
from outbox.errors import OutboxError
from outbox.settings import get_settings

# In this order in `outbox --help` and in the "choose from" of a wrong command.
GROUPS = (db, channel, send, dispatch, status, cancel, simulator, serve, apikey, user, chats,
          tokens, keys, alive, endpoints)


def build_parser() -> CommandParser:
    parser = CommandParser(prog="outbox", description="WhatsApp outbox for Whapi.cloud")
    commands = subcommands(parser, "command")
    for group in GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        from outbox.logging import configure_logging

        configure_logging(level=settings.log_level)
        handler: Handler = args.handler
        return handler(args, settings)
    except OutboxError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
