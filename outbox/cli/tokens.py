"""`outbox tokens`: channel token encryption (and the other secrets under the same key).

    outbox tokens rotate-key   re-encrypt every token, webhook secret and endpoint
                               signing secret from OUTBOX_ENCRYPTION_KEY_OLD to
                               OUTBOX_ENCRYPTION_KEY, in one transaction
    outbox tokens check        does every channel's token decrypt with the current key
                               (and its previous webhook secret, while still accepted),
                               is no webhook secret left in the clear, and does every
                               status-callback endpoint's signing secret decrypt?

Neither prints a token, a secret or a key. See outbox/admin/key_rotation.py for the procedure.
"""

from __future__ import annotations

import argparse
import json
import sys

from outbox.cli.parser import EXIT_FAILURE, EXIT_OK, Commands, subcommands
from outbox.cli.session import session_scope
from outbox.cli.table import print_table
from outbox.settings import Settings


def cmd_rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.key_rotation import require_rotation_keys, rotate_keys

    new = settings.encryption_key.get_secret_value() if settings.encryption_key else None
    old = settings.encryption_key_old.get_secret_value() if settings.encryption_key_old else None
    # Checked before the database is touched: a missing key is a one-line
    # error, not a started-then-rolled-back transaction.
    new, old = require_rotation_keys(new, old)
    with session_scope(settings) as session:
        result = rotate_keys(session, new_key=new, old_key=old,
                             on_progress=_progress if sys.stderr.isatty() else None)
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    print(result.line())
    return EXIT_OK


def _progress(done: int, total: int) -> None:
    sys.stderr.write(f"\r{done}/{total} tokens")
    sys.stderr.flush()


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.admin.key_rotation import check_endpoint_secrets, check_tokens

    key = settings.require_encryption_key()
    old = settings.encryption_key_old.get_secret_value() if settings.encryption_key_old else None
    with session_scope(settings) as session:
        checks = check_tokens(session, current_key=key, old_key=old,
                              workspace_id=args.workspace)
        endpoints = check_endpoint_secrets(session, current_key=key, old_key=old,
                                           workspace_id=args.workspace)
    failed = [c for c in checks if not c.ok]
    in_clear = [c for c in checks if c.secret_in_clear]
    unreadable_previous = [c for c in checks if c.previous_secret_unreadable]
    failed_endpoints = [e for e in endpoints if not e.ok]
    if args.json:
        # One list, as before endpoints were checked; `kind` tells the
        # entries apart (an endpoint's has endpoint_id and url where a
        # channel's has channel_id and name).
        print(json.dumps([
            {"kind": "channel", "channel_id": str(c.channel_id), "name": c.name,
             "workspace_id": c.workspace_id,
             "status": c.status, "key": c.key, "ok": c.ok, "problem": c.problem,
             "webhook_secret_in_clear": c.secret_in_clear,
             "previous_webhook_secret_unreadable": c.previous_secret_unreadable}
            for c in checks] + [
            {"kind": "endpoint", "endpoint_id": str(e.endpoint_id), "url": e.url,
             "workspace_id": e.workspace_id,
             "status": e.status, "key": e.key, "ok": e.ok, "problem": e.problem}
            for e in endpoints], indent=2))
    else:
        print_table([(c.channel_id, c.name, c.status, c.key, "ok" if c.ok else "FAILED",
                      c.problem or "") for c in checks],
                    ["channel", "name", "status", "key", "decrypts", "problem"])
        print(f"{len(checks) - len(failed)} of {len(checks)} channel tokens decrypt with "
              "the current key")
        if in_clear:
            print(f"{len(in_clear)} webhook secret{'s' if len(in_clear) != 1 else ''} "
                  "stored in the clear: run 'outbox tokens rotate-key'")
        if endpoints:
            print()
            print_table([(e.endpoint_id, e.url, e.status, e.key, "ok" if e.ok else "FAILED",
                          e.problem or "") for e in endpoints],
                        ["endpoint", "url", "status", "key", "decrypts", "problem"])
            print(f"{len(endpoints) - len(failed_endpoints)} of {len(endpoints)} endpoint "
                  "signing secrets decrypt with the current key")
    return (EXIT_FAILURE if failed or in_clear or unreadable_previous or failed_endpoints
            else EXIT_OK)


def register(commands: Commands) -> None:
    tokens = subcommands(commands.add_parser("tokens", help="channel token encryption"),
                         "tokens_cmd")
    p = tokens.add_parser(
        "rotate-key",
        help="re-encrypt every channel token, webhook secret and endpoint signing secret "
             "from OUTBOX_ENCRYPTION_KEY_OLD to OUTBOX_ENCRYPTION_KEY (one transaction; "
             "~0.1 s per token)")
    p.set_defaults(handler=cmd_rotate_key)
    p = tokens.add_parser(
        "check", help="check that every channel's token and every status-callback "
                      "endpoint's signing secret decrypt with OUTBOX_ENCRYPTION_KEY and no "
                      "webhook secret is stored in the clear (exit 1 if not)")
    p.add_argument("--workspace")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_check)
