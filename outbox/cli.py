"""`outbox`: the command line. Thin: parse, call a service function, print.

Exit codes: 0 ok, 1 unexpected failure, 2 bad input or configuration (one
line on stderr, nothing changed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from outbox.errors import InvalidSchedule, OutboxError
from outbox.settings import Settings, get_settings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace, Settings], int]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse prints usage + message; keep it to one actionable line.
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(EXIT_USAGE)


# --- plumbing ----------------------------------------------------------------


@contextlib.contextmanager
def session_scope(settings: Settings) -> Iterator[Session]:
    """A session in a transaction that commits on success (for command handlers)."""
    from outbox.database import database_url, make_engine
    from outbox.db.engine import session_factory

    engine = make_engine(database_url(settings), pool_size=2, pooler=settings.db_pooler)
    try:
        with session_factory(engine)() as session, session.begin():
            yield session
    finally:
        engine.dispose()


def _parse_when(value: str) -> datetime:
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidSchedule(f"--at {value!r} is not an ISO 8601 time", field="send_at") from None
    return when


def print_table(rows: Sequence[Sequence[object]], headers: Sequence[str]) -> None:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# --- db ----------------------------------------------------------------------


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.database import database_url
    from outbox.migrate import current_revision, shown, upgrade

    url, schema = database_url(settings), settings.db_schema
    before = current_revision(url, schema=schema)
    upgrade(url, args.revision, schema=schema)
    after = current_revision(url, schema=schema)
    print(f"{shown(url)}: {before or 'empty'} -> {after or 'empty'} (schema {schema})")
    return EXIT_OK


def cmd_db_downgrade(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.database import database_url
    from outbox.migrate import current_revision, downgrade, shown

    url, schema = database_url(settings), settings.db_schema
    before = current_revision(url, schema=schema)
    downgrade(url, args.revision, schema=schema)
    after = current_revision(url, schema=schema)
    print(f"{shown(url)}: {before or 'empty'} -> {after or 'empty'} (schema {schema})")
    return EXIT_OK


def cmd_db_url(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.database import database_url
    from outbox.db.engine import libpq_url

    url = database_url(settings)
    print(libpq_url(url) if args.libpq else url)
    return EXIT_OK


def cmd_db_grants(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.db.grants import grant_statements
    from outbox.errors import InvalidInput

    if not (args.service_role or args.app_role):
        raise InvalidInput("name --service-role, --app-role or both")
    for statement in grant_statements(settings.db_schema, service_role=args.service_role,
                                      app_role=args.app_role, owner_role=args.owner_role):
        print(statement)
    return EXIT_OK


def cmd_db_current(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.database import database_url
    from outbox.migrate import current_revision, head_revision

    current = current_revision(database_url(settings), schema=settings.db_schema)
    head = head_revision()
    behind = current != head
    print(f"{current or 'empty'} (head: {head}){' - run: outbox db upgrade' if behind else ''}")
    return EXIT_FAILURE if behind and args.check else EXIT_OK


# --- channels ----------------------------------------------------------------


def cmd_channel_add(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.channels import create_channel
    from outbox.errors import InvalidInput

    if not args.token_stdin:
        raise InvalidInput("pass the token on standard input with --token-stdin "
                           "(never on the command line, where ps and shell history see it)")
    token = sys.stdin.readline().strip()
    key = settings.require_encryption_key()
    with session_scope(settings) as session:
        channel = create_channel(
            session, name=args.name, phone_number=args.phone, token=token,
            encryption_key=key, workspace_id=args.workspace, base_url=args.base_url,
            default_region=settings.default_region,
        )
    print(channel.id)
    return EXIT_OK


def cmd_channel_list(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.channels import list_channels

    with session_scope(settings) as session:
        channels = list_channels(session, workspace_id=args.workspace)
    if args.json:
        print(json.dumps([
            {"id": str(c.id), "workspace_id": c.workspace_id, "name": c.name,
             "phone_number": c.phone_number, "base_url": c.base_url, "status": c.status,
             "paused_until": c.paused_until.isoformat() if c.paused_until else None,
             "pause_reason": c.pause_reason}
            for c in channels
        ], indent=2))
        return EXIT_OK
    print_table(
        [(c.id, c.workspace_id, c.name, c.phone_number, c.status,
          c.paused_until.isoformat(timespec="seconds") if c.paused_until else "",
          c.pause_reason or "") for c in channels],
        ["id", "workspace", "name", "phone", "status", "paused_until", "reason"],
    )
    return EXIT_OK


def cmd_channel_pause(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.channels import pause_channel

    with session_scope(settings) as session:
        c = pause_channel(session, args.channel_id, seconds=args.for_seconds)
    until = c.paused_until.isoformat(timespec="seconds") if c.paused_until else "until resumed"
    print(f"channel {c.id} paused ({until})")
    return EXIT_OK


def cmd_channel_resume(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.channels import resume_channel

    with session_scope(settings) as session:
        c = resume_channel(session, args.channel_id)
    print(f"channel {c.id} active")
    return EXIT_OK


# --- send ----------------------------------------------------------------------


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.enqueue import enqueue_text

    send_at = _parse_when(args.at) if args.at else None
    with session_scope(settings) as session:
        result = enqueue_text(
            session, channel_id=args.channel, to=args.to, body=args.text,
            idempotency_key=args.idempotency_key, priority=args.priority, send_at=send_at,
            default_region=settings.default_region, max_attempts=settings.max_attempts,
        )
    print(result.message_id)
    if result.duplicate:
        print("note: idempotency key already used; nothing new was queued", file=sys.stderr)
    return EXIT_OK


# --- dispatching -------------------------------------------------------------------


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from outbox.dispatch.daemon import run_daemon

    asyncio.run(run_daemon(settings))
    return EXIT_OK


def cmd_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from outbox.errors import InvalidInput

    if not args.once:
        raise InvalidInput("dispatch needs --once (for a long-running dispatcher: outbox run)")
    if args.limit is not None and args.limit < 1:
        raise InvalidInput("--limit must be at least 1")
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise InvalidInput("--max-seconds must be positive")
    summary = asyncio.run(_dispatch_once(settings, args.limit, args.max_seconds,
                                         progress=not args.no_progress and sys.stderr.isatty()))
    if args.json:
        print(json.dumps(summary.as_dict()))
    else:
        print(summary.line())
    return EXIT_OK


async def _dispatch_once(settings: Settings, limit: int | None, max_seconds: float | None,
                         *, progress: bool) -> Any:
    from outbox.dispatch.progress import due_count, progress_observer
    from outbox.dispatch.runtime import open_runtime, tune_gc
    from outbox.maintenance.rescuer import rescue_expired
    from outbox.maintenance.unpauser import unpause_expired

    tune_gc()
    async with open_runtime(settings) as runtime:
        # Cron deployments have no daemon: do its upkeep first (both are
        # safe to run concurrently with daemons and other cron runs).
        await rescue_expired(runtime.engine)
        await unpause_expired(runtime.engine)
        total = await due_count(runtime.engine) if progress else 0
        with progress_observer(total if limit is None else min(total, limit),
                               enabled=progress) as observer:
            dispatcher = runtime.dispatcher(observers=[observer])
            return await dispatcher.drain(limit=limit, max_seconds=max_seconds)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.status import queue_status

    with session_scope(settings) as session:
        status = queue_status(session, workspace_id=args.workspace)
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
        return EXIT_OK
    rows: list[tuple[object, ...]] = []
    for c in status.channels:
        state = c.status
        if c.paused_until is not None:
            state += f" until {c.paused_until.isoformat(timespec='seconds')}"
        rows.append((c.name, c.id, state, c.counts.get("queued", 0), c.counts.get("sending", 0),
                     c.counts.get("sent", 0), c.counts.get("failed", 0), c.pause_reason or ""))
    t = status.totals()
    rows.append(("TOTAL", "", "", t["queued"], t["sending"], t["sent"], t["failed"], ""))
    print_table(rows, ["channel", "id", "state", "queued", "sending", "sent", "failed",
                        "reason"])
    oldest = status.oldest_due_seconds
    print(f"oldest due message waiting: {oldest:.1f}s" if oldest is not None
          else "nothing due")
    if status.dead_letters:
        print(f"dead letters (latest {len(status.dead_letters)}; requeue with: outbox retry):")
        for d in status.dead_letters:
            print(f"  {d['message_id']}  to {d['to']}  after {d['attempts']} attempts: "
                  f"{d['error']}")
    if status.webhook_dead_letters:
        latest = status.webhook_dead_letter_latest
        print(f"webhook bodies kept unused: {status.webhook_dead_letters} (latest "
              f"{latest.isoformat(timespec='seconds') if latest else '?'}; "
              "table webhook_dead_letters)")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.status import retry_failed

    with session_scope(settings) as session:
        n = retry_failed(session, channel_id=args.channel, message_id=args.message)
    print(f"requeued {n} failed message{'s' if n != 1 else ''}")
    return EXIT_OK


# --- simulator -------------------------------------------------------------------


def cmd_simulator(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.providers.simulator.app import serve

    serve(host=args.host, port=args.port, accept_any_token=args.accept_any_token)
    return EXIT_OK


# --- parser ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="outbox", description="WhatsApp outbox for Whapi.cloud")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db_cmd", required=True)
    p = db.add_parser("upgrade", help="apply migrations")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(handler=cmd_db_upgrade)
    p = db.add_parser("downgrade", help="revert migrations")
    p.add_argument("revision", nargs="?", default="base")
    p.set_defaults(handler=cmd_db_downgrade)
    p = db.add_parser("url", help="print the database URL in use (starts the embedded server)")
    p.add_argument("--libpq", action="store_true", help="plain postgresql:// form for psql")
    p.set_defaults(handler=cmd_db_url)
    p = db.add_parser("current", help="print the schema revision")
    p.add_argument("--check", action="store_true", help="exit 1 unless migrations are at head")
    p.set_defaults(handler=cmd_db_current)
    p = db.add_parser("grants", help="print least-privilege GRANTs for the service and "
                      "application roles (run them as the migration role)")
    p.add_argument("--service-role", help="the role of outbox run/dispatch/serve")
    p.add_argument("--app-role", help="the role the application enqueues with")
    p.add_argument("--owner-role", help="the migration role (so later tables are granted too)")
    p.set_defaults(handler=cmd_db_grants)

    ch = sub.add_parser("channel", help="WhatsApp channels").add_subparsers(
        dest="channel_cmd", required=True)
    p = ch.add_parser("add", help="add a channel; prints its id")
    p.add_argument("--name", required=True)
    p.add_argument("--phone", required=True, help="the channel's own number, E.164")
    p.add_argument("--workspace", default="default")
    p.add_argument("--base-url", help="Whapi base URL for this channel (default: settings)")
    p.add_argument("--token-stdin", action="store_true", help="read the Whapi token from stdin")
    p.set_defaults(handler=cmd_channel_add)
    p = ch.add_parser("list", help="list channels")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_channel_list)
    p = ch.add_parser("pause", help="stop sending on a channel")
    p.add_argument("channel_id")
    p.add_argument("--for", dest="for_seconds", type=float, help="seconds; default: until resumed")
    p.set_defaults(handler=cmd_channel_pause)
    p = ch.add_parser("resume", help="resume a paused or disabled channel")
    p.add_argument("channel_id")
    p.set_defaults(handler=cmd_channel_resume)

    p = sub.add_parser("send", help="queue a text message; prints its id")
    p.add_argument("--channel", required=True)
    p.add_argument("--to", required=True)
    p.add_argument("--text", required=True)
    p.add_argument("--idempotency-key")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--at", help="ISO 8601 time with timezone, e.g. 2026-01-31T09:00:00+00:00")
    p.set_defaults(handler=cmd_send)

    p = sub.add_parser("run", help="run the dispatcher daemon (until SIGTERM)")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("dispatch", help="send what is due, then exit (for cron)")
    p.add_argument("--once", action="store_true", help="required: drain once and exit")
    p.add_argument("--limit", type=int, help="claim at most N messages")
    p.add_argument("--max-seconds", type=float, help="stop claiming after S seconds")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_dispatch)

    p = sub.add_parser("status", help="queue counts per channel, pauses, dead letters")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("retry", help="requeue failed (dead-lettered) messages")
    p.add_argument("--channel", help="only this channel")
    p.add_argument("--message", help="only this message id")
    p.set_defaults(handler=cmd_retry)

    p = sub.add_parser("simulator", help="run the Whapi simulator (an HTTP server)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8099)
    p.add_argument("--accept-any-token", action="store_true",
                   help="make any Bearer token a channel on first use (default: like Whapi, "
                        "401 for tokens not registered with POST /_sim/channels)")
    p.set_defaults(handler=cmd_simulator)

    # Command groups that live in their own modules.
    from outbox import cli_http, cli_tokens

    cli_http.register(sub)
    cli_tokens.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
