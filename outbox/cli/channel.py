"""`outbox channel`: WhatsApp channels (add, list, pause, resume, send
limits, the webhook settings to paste into Whapi, and a new webhook secret)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from outbox.cli.parser import EXIT_OK, Commands, subcommands
from outbox.cli.session import session_scope
from outbox.cli.table import print_table
from outbox.settings import Settings

if TYPE_CHECKING:
    from outbox.admin.pacing import ChannelLimits


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
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
            default_region=settings.default_region, allow_http=settings.allow_http_base_url,
        )
    print(channel.id)
    return EXIT_OK


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
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


def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.channels import pause_channel

    with session_scope(settings) as session:
        c = pause_channel(session, args.channel_id, seconds=args.for_seconds)
    until = c.paused_until.isoformat(timespec="seconds") if c.paused_until else "until resumed"
    print(f"channel {c.id} paused ({until})")
    return EXIT_OK


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.channels import resume_channel

    with session_scope(settings) as session:
        c = resume_channel(session, args.channel_id)
    print(f"channel {c.id} active")
    return EXIT_OK


def cmd_webhook_info(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.webhook_info import webhook_info

    with session_scope(settings) as session:
        info = webhook_info(session, settings, args.channel_id, mode=args.mode)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print_webhook_info(info)
    return EXIT_OK


def cmd_rotate_webhook_secret(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.webhook_info import new_webhook_secret_info
    from outbox.admin.webhook_secrets import keep_old_hours

    keep = keep_old_hours(args.keep_old_hours)  # before the database: bad input changes nothing
    with session_scope(settings) as session:
        info = new_webhook_secret_info(session, settings, args.channel_id, keep_old_for=keep,
                                       mode=args.mode)
    until = info["previous_secret_valid_until"]
    if args.json:
        print(json.dumps(info | {"previous_secret_valid_until":
                                 until.isoformat() if until else None}, indent=2))
        return EXIT_OK
    print_webhook_info(info)
    print(f"\nThe old secret still works until {until.isoformat(timespec='seconds')}: "
          "give Whapi the new one before then." if until else
          "\nThe old secret no longer works: give Whapi the new one now.")
    return EXIT_OK


def print_webhook_info(info: dict[str, Any]) -> None:
    """What `webhook-info` prints: the settings to give Whapi, by hand or as
    the body of its PATCH /settings."""
    events: dict[str, list[str]] = {}
    for e in info["events"]:
        events.setdefault(e["type"], []).append(e["method"])
    print(f"URL:    {info['url']}")
    print(f"Mode:   {info['mode']}")
    print(f"Header: {info['header']}: {info['secret']}")
    print("Events: " + "; ".join(f"{t} ({', '.join(m)})" for t, m in events.items()))
    print("\nOr send this as the body of Whapi's PATCH /settings for the channel:")
    print(json.dumps(info["whapi_settings"], indent=2, ensure_ascii=False))
    if not info["public_url_set"]:
        print("note: OUTBOX_PUBLIC_URL is not set; the URL uses the local listen address, "
              "which Whapi can't reach from the internet", file=sys.stderr)


_CLEAR = ("off", "none", "unlimited")


def cmd_limits(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.pacing import get_limits, set_limits

    changes = {name: (None if value.strip().lower() in _CLEAR else value)
               for name in LIMIT_OPTIONS
               if (value := getattr(args, name)) is not None}
    with session_scope(settings) as session:
        if changes:
            limits = set_limits(session, args.channel_id, **changes)
        else:
            limits = get_limits(session, args.channel_id)
    if args.json:
        print(json.dumps(limits.as_dict(), indent=2))
        return EXIT_OK
    print_limits(limits)
    return EXIT_OK


def print_limits(cl: ChannelLimits) -> None:
    lim, use = cl.limits, cl.usage

    def show(value: object, unit: str = "") -> str:
        return "unlimited" if value is None else f"{value:g}{unit}" if isinstance(
            value, float) else f"{value}{unit}"

    rows = [
        ("per second", show(lim.per_second) + (f" (burst {lim.burst})" if lim.burst else ""),
         f"{use.tokens:.1f} tokens now" if use and use.tokens is not None else ""),
        ("per minute", show(lim.per_minute),
         f"{use.minute_used} this minute" if use and lim.per_minute else ""),
        ("per day", show(lim.per_day), ""),
        ("warm-up", str(lim.warmup) + f" from {lim.warmup_from}" if lim.warmup else "none", ""),
        ("new chats per day", show(lim.new_chats_per_day),
         f"{use.new_chats_used} today" + (
             f" (cap {use.new_chats_cap} in the warm-up)"
             if lim.warmup and use.new_chats_cap is not None else "") if use else ""),
        ("chat gap", show(lim.chat_gap_seconds, "s"), ""),
        ("typing time", show(lim.typing_time_seconds, "s") if lim.typing_time_seconds
         is not None else "none", ""),
        ("time zone", lim.timezone, ""),
    ]
    if use is not None:
        cap = "no cap" if use.day_cap is None else f"cap {use.day_cap}"
        rows[2] = ("per day", show(lim.per_day), f"{use.day_used} sent today "
                   f"({use.day.isoformat()}, {cap})")
    print(f"channel {cl.channel_id}")
    width = max(len(r[0]) for r in rows)
    for label, value, now in rows:
        print(f"  {label:<{width}}  {value:<24} {now}".rstrip())
    if use is not None and use.rows_left == 0:
        print("  out of budget: rows wait for the next token or the next day")


#: `outbox channel limits` options -> set_limits' keyword arguments.
LIMIT_OPTIONS = ("per_second", "burst", "per_minute", "per_day", "new_chats_per_day",
                 "chat_gap", "typing_time", "timezone", "warmup")


def register(commands: Commands) -> None:
    ch = subcommands(commands.add_parser("channel", help="WhatsApp channels"), "channel_cmd")
    p = ch.add_parser("add", help="add a channel; prints its id")
    p.add_argument("--name", required=True)
    p.add_argument("--phone", required=True, help="the channel's own number, E.164")
    p.add_argument("--workspace", default="default")
    p.add_argument("--base-url", help="Whapi base URL for this channel (default: settings)")
    p.add_argument("--token-stdin", action="store_true", help="read the Whapi token from stdin")
    p.set_defaults(handler=cmd_add)
    p = ch.add_parser("list", help="list channels")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_list)
    p = ch.add_parser("pause", help="stop sending on a channel")
    p.add_argument("channel_id")
    p.add_argument("--for", dest="for_seconds", type=float, help="seconds; default: until resumed")
    p.set_defaults(handler=cmd_pause)
    p = ch.add_parser("resume", help="resume a paused or disabled channel")
    p.add_argument("channel_id")
    p.set_defaults(handler=cmd_resume)
    p = ch.add_parser(
        "webhook-info", help="the webhook configuration to paste into Whapi (URL, mode, "
                             "header, events)")
    p.add_argument("channel_id")
    p.add_argument("--mode", choices=("body", "path", "method"), default="body",
                   help="Whapi's webhook mode (all three are served; default body)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_webhook_info)
    p = ch.add_parser(
        "rotate-webhook-secret",
        help="give the channel a new webhook secret (the old one keeps working for a while); "
             "prints the webhook configuration to give Whapi")
    p.add_argument("channel_id")
    p.add_argument("--keep-old-hours", type=float, default=24.0,
                   help="how long the old secret still works, 0 to 168 (default 24; 0: it "
                        "stops at once)")
    p.add_argument("--mode", choices=("body", "path", "method"), default="body",
                   help="Whapi's webhook mode (all three are served; default body)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_rotate_webhook_secret)
    p = ch.add_parser(
        "limits", help="show a channel's send limits with today's usage, or change them "
                       "(each option sets one; 'off' clears it)")
    p.add_argument("channel_id")
    p.add_argument("--per-second", help="messages per second (a token bucket)")
    p.add_argument("--burst", help="how many may go at once (default: the rate, rounded up)")
    p.add_argument("--per-minute", help="messages per clock minute")
    p.add_argument("--per-day", help="messages per day in the channel's time zone")
    p.add_argument("--new-chats-per-day",
                   help="first messages per day to chats that never wrote to us")
    p.add_argument("--chat-gap", help="least time between messages in one chat, e.g. 3s")
    p.add_argument("--typing-time", help="Whapi's typing_time for texts without one, e.g. 2s")
    p.add_argument("--timezone", help="where the day starts (IANA name; default UTC)")
    p.add_argument("--warmup", help="START,xFACTOR,CEILING: the daily cap grows from START by "
                                    "FACTOR a day up to CEILING, e.g. 50,x1.5,1000 (the "
                                    "new-chat cap grows in step)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_limits)
