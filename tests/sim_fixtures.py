"""Fixtures for the provider tests: a real Whapi simulator on loopback, and a
real HTTP server to receive its webhooks.

Registered for every test module by `pytest_plugins` in tests/conftest.py.
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from outbox.providers.simulator.control import SimulatorControl, SimulatorHandle, start_simulator
from tests.whapi_spec import WEBHOOK_SCHEMA, assert_valid


@pytest.fixture(scope="session")
def simulator_process() -> Iterator[SimulatorHandle]:
    """The one Whapi simulator of the run: a subprocess on a loopback port the OS
    picks, accepting any token."""
    with start_simulator() as handle:
        yield handle


@pytest.fixture
def sim(simulator_process: SimulatorHandle) -> Iterator[SimulatorControl]:
    """The simulator's control client, reset (no records, no faults) before and
    after each test."""
    control = simulator_process.control()
    control.reset()
    yield control
    control.reset()
    control.close()


@pytest.fixture
def sim_url(simulator_process: SimulatorHandle) -> str:
    return simulator_process.url


@pytest.fixture(scope="session")
def strict_sim() -> Iterator[SimulatorHandle]:
    """A second simulator, in its command-line default mode (only registered
    tokens): the tests of that start-up policy need a process started with it."""
    with start_simulator(accept_any_token=False) as handle:
        yield handle


@pytest.fixture
def strict_ctl(strict_sim: SimulatorHandle) -> Iterator[SimulatorControl]:
    control = strict_sim.control()
    control.reset()
    yield control
    control.reset()
    control.close()


def new_token() -> str:
    """A Whapi-looking token (32 alphanumerics), unique per call."""
    return secrets.token_hex(16)


def unused_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# -- a webhook receiver -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    """One request the receiver got."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    at: float  # time.monotonic()

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


class _QuietOnHangUp(ThreadingHTTPServer):
    """A sender that hung up before our answer (timed out, or was stopped:
    tests do both) is expected: no traceback on stderr, where it would land
    in whatever a later test captures from this process. Anything else
    still prints."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class WebhookReceiver:
    """A real HTTP server on loopback that records every request (any method)
    and answers with the next scripted status, then `default_status`, after
    `answer_delay_s` (the request is recorded on arrival)."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Received] = []
        self.script: list[int] = []
        self.default_status = 200
        self.answer_delay_s = 0.0
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with receiver._cond:
                    status = receiver.script.pop(0) if receiver.script else (
                        receiver.default_status)
                    receiver.requests.append(Received(
                        method=self.command, path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        raw=raw, at=time.monotonic()))
                    receiver._cond.notify_all()
                    delay = receiver.answer_delay_s
                if delay:
                    time.sleep(delay)
                body = b"" if status in (204, 304) else b"{}"  # HTTP forbids a body there
                self.send_response(status)
                if body:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _QuietOnHangUp(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # A short poll interval: shutdown() waits for it (0.5 s by default).
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, count: int, *, timeout: float = 10.0,
                 where: Callable[[Received], bool] | None = None) -> list[Received]:
        """The first `count` requests (matching `where`); raise after `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [r for r in self.requests if where is None or where(r)]
                if len(got) >= count:
                    return got[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(got)} of {count} webhook requests after {timeout}s")
                self._cond.wait(left)

    def bodies(self) -> list[Any]:
        with self._cond:
            return [r.json for r in self.requests]


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


def assert_spec(name: str, instance: Any) -> None:
    """Check `instance` against schema `name` of tests/whapi_spec (JSON Schemas
    written from Whapi's spec)."""
    assert_valid(name, instance)


def assert_webhook_body(body: Any) -> None:
    """Whapi's envelope (schema WebhookPayload), and the schema check."""
    assert isinstance(body, dict)
    assert set(body["event"]) == {"type", "event"}
    assert isinstance(body["channel_id"], str) and body["channel_id"]
    assert_valid(WEBHOOK_SCHEMA, body)
