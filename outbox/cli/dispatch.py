"""`outbox run` (the dispatcher daemon) and `outbox dispatch --once` (one
drain, for cron)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from outbox.cli.parser import EXIT_OK, Commands
from outbox.settings import Settings

if TYPE_CHECKING:
    from outbox.dispatch.dispatcher import Summary


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.dispatch.daemon import run_daemon
    from outbox.dispatch.eventloop import run

    run(run_daemon(settings))
    return EXIT_OK


def cmd_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.dispatch.eventloop import run
    from outbox.errors import InvalidInput

    if not args.once:
        raise InvalidInput("dispatch needs --once (for a long-running dispatcher: outbox run)")
    if args.limit is not None and args.limit < 1:
        raise InvalidInput("--limit must be at least 1")
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise InvalidInput("--max-seconds must be positive")
    summary = run(_dispatch_once(settings, args.limit, args.max_seconds,
                                         progress=not args.no_progress and sys.stderr.isatty()))
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(summary.line())
    return EXIT_OK


async def _dispatch_once(settings: Settings, limit: int | None, max_seconds: float | None,
                         *, progress: bool) -> Summary:
    from outbox.dispatch.runtime import open_runtime, tune_gc
    from outbox.events.callbacks import CallbackSender, send_callbacks_once
    from outbox.maintenance.upkeep import run_upkeep

    tune_gc()
    async with open_runtime(settings) as runtime:
        await run_upkeep(runtime.target, settings)  # no daemon does it for cron deployments
        if not progress:
            summary = await runtime.dispatcher().drain(limit=limit, max_seconds=max_seconds)
        else:
            from outbox.dispatch.progress import due_count, progress_observer

            total = await due_count(runtime.target)
            with progress_observer(total if limit is None else min(total, limit)) as observer:
                dispatcher = runtime.dispatcher(observers=[observer])
                summary = await dispatcher.drain(limit=limit, max_seconds=max_seconds)
        # No daemon posts the status callbacks either: this pass does.
        await send_callbacks_once(runtime.target, CallbackSender.from_settings(settings))
        return summary


def register(commands: Commands) -> None:
    p = commands.add_parser("run", help="run the dispatcher daemon (until SIGTERM)")
    p.set_defaults(handler=cmd_run)

    p = commands.add_parser("dispatch", help="send what is due, then exit (for cron)")
    p.add_argument("--once", action="store_true", help="required: drain once and exit")
    p.add_argument("--limit", type=int, help="claim at most N messages")
    p.add_argument("--max-seconds", type=float, help="stop claiming after S seconds")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_dispatch)
