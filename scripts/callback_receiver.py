"""A small status-callback receiver: checks each request's Standard Webhooks
signature and prints it. scripts/demo runs one; on its own:

    outbox endpoints add http://127.0.0.1:9000/callbacks     # prints whsec_...
    python scripts/callback_receiver.py --port 9000 --secret whsec_...

A receiver should answer 2xx quickly (and do its work after), dedupe on
`webhook-id` (a retry carries the same one), and refuse a signature that
doesn't match or a timestamp more than a few minutes off.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import hashlib
import hmac
import json
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TOLERANCE_SECONDS = 300


def verify(secret: str, headers: dict[str, str], body: bytes, *,
           now: float | None = None) -> bool:
    """The Standard Webhooks check, written out (no package needed)."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit():
        return False
    if abs((now or time.time()) - int(stamp)) > TOLERANCE_SECONDS:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{stamp}.".encode() + body,
                                         hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, sig.partition(",")[2])
               for sig in headers.get("webhook-signature", "").split()
               if sig.startswith("v1,"))


class CallbackReceiver:
    """A loopback HTTP server that verifies, counts and (via `show`) prints
    every callback; `seen` dedupes on webhook-id, as a receiver should."""

    def __init__(self, secret: str = "", *, port: int = 0,
                 show: Callable[[dict[str, Any], bool], None] | None = None) -> None:
        self.secret = secret
        self.by_type: collections.Counter[str] = collections.Counter()
        self.seen: set[str] = set()
        self.bad_signatures = 0
        self.replays = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: a sender reuses its connections

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                ok = verify(receiver.secret, headers, body)
                self.send_response(204 if ok else 401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                event = json.loads(body) if ok else {}
                with receiver._lock:
                    if not ok:
                        receiver.bad_signatures += 1
                        return
                    if headers["webhook-id"] in receiver.seen:
                        receiver.replays += 1
                        return
                    receiver.seen.add(headers["webhook-id"])
                    receiver.by_type[event["type"]] += 1
                if show is not None:
                    show(event, ok)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 512  # a sender opens its connections all at once

        self._server = Server(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/callbacks"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, type_: str) -> int:
        with self._lock:
            return self.by_type[type_]


def describe(event: dict[str, Any]) -> str:
    p = event.get("payload") or {}
    detail = p.get("wa_message_id") or p.get("error") or p.get("reason") or p.get("by") or ""
    what = event.get("message_id") or event.get("chat_id") or event.get("channel_id") or ""
    return f"{event['type']:<18} {what} {detail}".rstrip()


def main() -> int:
    parser = argparse.ArgumentParser(description="print signed status callbacks")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--secret", required=True, help="the endpoint's whsec_... secret")
    args = parser.parse_args()

    def show(event: dict[str, Any], ok: bool) -> None:
        print(f"evt_{event['id']}  signature ok  {describe(event)}", flush=True)

    with CallbackReceiver(args.secret, port=args.port, show=show) as receiver:
        print(f"receiving on {receiver.url} (Ctrl-C to stop)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
