"""What every `outbox` command is built from: the parser class, the exit
codes and the handler type.

Bad input is one line on stderr and exit 2, not argparse's usage block.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn, Protocol

from outbox.settings import Settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: What a command runs (set on its parser with `set_defaults(handler=...)`).
Handler = Callable[[argparse.Namespace, Settings], int]


class CommandParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse prints usage + message; keep it to one actionable line.
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


class Commands(Protocol):
    """The subcommands of one parser: where a group module adds its commands."""

    def add_parser(self, name: str, **kwargs: Any) -> CommandParser: ...


def subcommands(parser: CommandParser, dest: str) -> Commands:
    """Required subcommands under `parser`; `dest` is the name the error
    gives when none is named ("the following arguments are required: ...")."""
    return parser.add_subparsers(dest=dest, required=True, parser_class=CommandParser)
