"""`outbox serve`: the HTTP service (API, webhooks, cron), and /metrics on a
listener of its own when OUTBOX_METRICS_PORT is set (outbox.metrics).

SIGTERM (or SIGINT): stop accepting connections, let the requests in flight
finish (up to SHUTDOWN_GRACE_SECONDS), run the app's shutdown, exit 0, like
`outbox run`. Plain uvicorn re-raises the signal after its graceful
shutdown, so the process died of it (exit -15) and a supervisor counted a
clean stop as a crash.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING

from outbox.cli.parser import EXIT_OK, Commands
from outbox.settings import Settings

if TYPE_CHECKING:
    import uvicorn

# Requests in flight get this long after SIGTERM (as the dispatcher's sends
# do); what is still running then is cut (a cron pass's unsent rows go back
# to the queue when their lease runs out).
SHUTDOWN_GRACE_SECONDS = 30
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from outbox.api import create_app
    from outbox.metrics import serve_metrics

    host = args.host or settings.http_host
    port = args.port if args.port is not None else settings.http_port
    # log_config=None: uvicorn's records go through our logging (structlog,
    # redaction) instead of its own handlers.
    config = uvicorn.Config(create_app(settings), host=host, port=port, log_config=None,
                            access_log=False, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS)
    metrics = serve_metrics(settings)
    try:
        _graceful_server(config).run()
    finally:
        if metrics is not None:
            metrics.close()
    return EXIT_OK


def _graceful_server(config: uvicorn.Config) -> uvicorn.Server:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn's Server, whose stop signals end in a graceful shutdown
        and a normal return instead of the signal raised again."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield  # signals reach the main thread only
                return
            originals = {sig: signal.signal(sig, self._stop) for sig in STOP_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

        def _stop(self, sig: int, frame: FrameType | None) -> None:
            # A second signal: stop waiting for the requests in flight.
            if self.should_exit:
                self.force_exit = True
            self.should_exit = True
            # Event streams never finish by themselves: end them now.
            hub = getattr(getattr(self.config.app, "state", None), "event_hub", None)
            if hub is not None:
                hub.end_streams()

    return GracefulServer(config)


def register(commands: Commands) -> None:
    p = commands.add_parser("serve", help="run the HTTP service (API, webhooks, cron; "
                               "metrics on OUTBOX_METRICS_PORT)")
    p.add_argument("--host", help="listen address (default: OUTBOX_HTTP_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: OUTBOX_HTTP_PORT, 8080)")
    p.set_defaults(handler=cmd_serve)
