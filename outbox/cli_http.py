"""CLI commands for the HTTP service (registered by outbox.cli.build_parser):

    outbox serve [--host H] [--port P]
    outbox apikey create --workspace W [--name N] | list [--workspace W] | revoke ID
    outbox channel webhook-info ID [--mode body|path|method] [--json]
    outbox chats list [--unread] [--archived] [--channel ID] [--workspace W]
                      [--limit N] [--cursor C] [--json]
    outbox chats archive|unarchive|read ID
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from outbox.settings import Settings

EXIT_OK = 0


# --- serve -------------------------------------------------------------------


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


# --- API keys ----------------------------------------------------------------


def cmd_apikey_create(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.apikeys import create_api_key
    from outbox.cli import session_scope

    with session_scope(settings) as session:
        key = create_api_key(session, workspace_id=args.workspace, name=args.name)
    print(key.key)
    print(f"API key {key.id} for workspace {key.workspace_id!r}: shown once, store it now "
          "(only a hash is kept)", file=sys.stderr)
    return EXIT_OK


def cmd_apikey_list(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.apikeys import list_api_keys
    from outbox.cli import print_table, session_scope

    with session_scope(settings) as session:
        keys = list_api_keys(session, workspace_id=args.workspace)
    print_table([(k.id, k.workspace_id, k.name or "", f"wo_{k.prefix}_…",
                  k.created_at.isoformat(timespec="seconds"),
                  k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else "")
                 for k in keys], ["id", "workspace", "name", "key", "created", "revoked"])
    return EXIT_OK


def cmd_apikey_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.apikeys import revoke_api_key
    from outbox.cli import session_scope

    with session_scope(settings) as session:
        revoke_api_key(session, args.key_id)
    print(f"API key {args.key_id} revoked")
    return EXIT_OK


# --- channel webhook-info -------------------------------------------------------


def webhook_info(settings: Settings, channel_id: str, mode: str = "body") -> dict[str, Any]:
    from outbox.admin.channels import get_channel
    from outbox.cli import session_scope
    from outbox.webhooks.apply import SECRET_HEADER, whapi_webhook_settings

    with session_scope(settings) as session:
        channel = get_channel(session, channel_id)
        cid, secret = channel.id, channel.webhook_secret
    base = (settings.public_url or f"http://{settings.http_host}:{settings.http_port}").rstrip("/")
    url = f"{base}/webhooks/whapi/{cid}"
    whapi = whapi_webhook_settings(url, secret, mode=mode)
    return {"channel_id": str(cid), "url": url, "mode": mode,
            "header": SECRET_HEADER, "secret": secret,
            "events": whapi["webhooks"][0]["events"], "whapi_settings": whapi,
            "public_url_set": settings.public_url is not None}


def cmd_channel_webhook_info(args: argparse.Namespace, settings: Settings) -> int:
    info = webhook_info(settings, args.channel_id, args.mode)
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
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
    return EXIT_OK


# --- chats -----------------------------------------------------------------------


def cmd_chats_list(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.chats import list_chats
    from outbox.cli import print_table, session_scope

    with session_scope(settings) as session:
        page = list_chats(session, workspace_id=args.workspace, channel_id=args.channel,
                          unread_only=args.unread, archived=args.archived, limit=args.limit,
                          cursor=args.cursor)
    if args.json:
        print(json.dumps({"chats": [c.as_dict() for c in page.chats],
                          "next_cursor": page.next_cursor}, indent=2))
        return EXIT_OK
    print_table([(c.id, c.phone, c.name or "", c.unread_count,
                  c.last_message_at.isoformat(timespec="seconds") if c.last_message_at else "",
                  (c.last_message_preview or "")[:40], c.status) for c in page.chats],
                ["id", "contact", "name", "unread", "last_message_at", "last_message", "status"])
    if page.next_cursor:
        print(f"more: --cursor {page.next_cursor}", file=sys.stderr)
    return EXIT_OK


def cmd_chats_archive(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.chats import archive_chat, unarchive_chat
    from outbox.cli import session_scope

    change = unarchive_chat if args.chats_cmd == "unarchive" else archive_chat
    with session_scope(settings) as session:
        status = change(session, args.chat_id, workspace_id=args.workspace)
    print(f"chat {args.chat_id} {status}")
    return EXIT_OK


def cmd_chats_read(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.chats import mark_chat_read
    from outbox.cli import session_scope

    with session_scope(settings) as session:
        n = mark_chat_read(session, args.chat_id, workspace_id=args.workspace)
    print(f"chat {args.chat_id} read ({n} message{'s' if n != 1 else ''} marked read)")
    return EXIT_OK


# --- parser ------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add this module's subcommands to the `outbox` parser."""
    p = sub.add_parser("serve", help="run the HTTP service (API, webhooks, cron, metrics)")
    p.add_argument("--host", help="listen address (default: OUTBOX_HTTP_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: OUTBOX_HTTP_PORT, 8080)")
    p.set_defaults(handler=cmd_serve)

    keys = sub.add_parser("apikey", help="HTTP API keys").add_subparsers(
        dest="apikey_cmd", required=True)
    p = keys.add_parser("create", help="create a key for a workspace; prints it once")
    p.add_argument("--workspace", required=True)
    p.add_argument("--name", help="what the key is for")
    p.set_defaults(handler=cmd_apikey_create)
    p = keys.add_parser("list", help="list keys (never the keys themselves)")
    p.add_argument("--workspace")
    p.set_defaults(handler=cmd_apikey_list)
    p = keys.add_parser("revoke", help="revoke a key by id")
    p.add_argument("key_id")
    p.set_defaults(handler=cmd_apikey_revoke)

    p = _channel_group(sub).add_parser(
        "webhook-info", help="the webhook configuration to paste into Whapi (URL, mode, "
                             "header, events)")
    p.add_argument("channel_id")
    p.add_argument("--mode", choices=("body", "path", "method"), default="body",
                   help="Whapi's webhook mode (all three are served; default body)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_channel_webhook_info)

    chats = sub.add_parser("chats", help="conversations").add_subparsers(
        dest="chats_cmd", required=True)
    p = chats.add_parser("list", help="chats, newest message first")
    p.add_argument("--unread", action="store_true", help="only chats with unread messages")
    p.add_argument("--archived", action="store_true", help="archived chats instead of active")
    p.add_argument("--channel", help="only this channel")
    p.add_argument("--workspace")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor", help="the cursor the previous page printed")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_chats_list)
    for name, help_text, handler in (
        ("archive", "archive a chat (a new inbound message reopens it)", cmd_chats_archive),
        ("unarchive", "make an archived chat active again", cmd_chats_archive),
        ("read", "mark a chat read (unread count to 0)", cmd_chats_read),
    ):
        p = chats.add_parser(name, help=help_text)
        p.add_argument("chat_id")
        p.add_argument("--workspace")
        p.set_defaults(handler=handler)


def _channel_group(sub: Any) -> Any:
    """The `channel` command's own subcommands (defined in outbox/cli.py):
    `webhook-info` belongs with add/list/pause/resume."""
    channel = sub.choices["channel"]
    for action in channel._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError("the channel command has no subcommands")  # pragma: no cover
