"""`outbox alive`: exit 0 if this container's `outbox run` or `outbox serve`
beat within --max-age seconds (OUTBOX_HEARTBEAT_FILE), 1 if not. The
image's health check: the process, not the database (outbox/heartbeat.py)."""

from __future__ import annotations

import argparse
import sys

from outbox.cli.parser import EXIT_FAILURE, EXIT_OK, Commands
from outbox.settings import Settings


def cmd_alive(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.errors import ConfigurationError
    from outbox.heartbeat import age_seconds

    if settings.heartbeat_file is None:
        raise ConfigurationError("OUTBOX_HEARTBEAT_FILE is not set: the process writes no "
                                 "heartbeat to check")
    age = age_seconds(settings.heartbeat_file)
    if age is None:
        sys.stderr.write(f"not alive: no heartbeat in {settings.heartbeat_file} yet\n")
        return EXIT_FAILURE
    if age > args.max_age:
        sys.stderr.write(f"not alive: last heartbeat {age:.0f}s ago (over {args.max_age:g}s)\n")
        return EXIT_FAILURE
    print(f"alive: last heartbeat {age:.0f}s ago")
    return EXIT_OK


def register(commands: Commands) -> None:
    from outbox.heartbeat import DEFAULT_MAX_AGE_SECONDS

    p = commands.add_parser("alive", help="exit 0 if outbox run / serve beat recently "
                            "(a health check that doesn't ask the database)")
    p.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_SECONDS,
                   help=f"seconds a heartbeat stays fresh (default {DEFAULT_MAX_AGE_SECONDS:g})")
    p.set_defaults(handler=cmd_alive)
