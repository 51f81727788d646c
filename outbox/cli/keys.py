"""`outbox keys generate`: a new OUTBOX_ENCRYPTION_KEY (or cron secret)."""

from __future__ import annotations

import argparse

from outbox.cli.parser import EXIT_OK, Commands, subcommands
from outbox.settings import Settings


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.crypto import generate_key

    print(generate_key())
    return EXIT_OK


def register(commands: Commands) -> None:
    keys = subcommands(commands.add_parser("keys", help="key material"), "keys_cmd")
    p = keys.add_parser("generate", help="print 32 random bytes in base64: a new "
                        "OUTBOX_ENCRYPTION_KEY (or OUTBOX_CRON_SECRET)")
    p.set_defaults(handler=cmd_generate)
