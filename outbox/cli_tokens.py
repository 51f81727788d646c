"""CLI commands for the tokens group (registered by outbox.cli.build_parser)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    """Add this module's subcommands to the `outbox` parser."""
    _ = (sub, argparse)
