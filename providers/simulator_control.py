"""Drive the Whapi simulator from Python: start it, inspect it, inject faults.

    with start_simulator() as sim:                 # subprocess on a free port
        ctl = SimulatorControl(sim.url)
        ctl.set_faults(token="tok", error_status=503, error_rate=0.5)
        ...                                        # point a channel's base_url at sim.url
        records = ctl.sent(token="tok")            # what the "provider" accepted

The control client is synchronous (httpx.Client): tests, the demo and the
benchmark call it between phases, not on a hot path.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from providers.simulator import LISTENING_PREFIX

__all__ = [
    "SentRecord",
    "SimulatorControl",
    "SimulatorHandle",
    "SimulatorStartError",
    "SimulatorStats",
    "TokenStats",
    "start_simulator",
]

_REPO_ROOT = Path(__file__).resolve().parent.parent


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Building one costs ~20 ms; tests create a control client per test.
    return httpx.create_ssl_context()


@dataclass(frozen=True, slots=True)
class SentRecord:
    """One send the simulator accepted."""

    seq: int
    id: str
    to: str
    chat_id: str
    type: str
    payload: Mapping[str, Any]  # the full JSON body as received, `to` included
    received_at: float  # unix time when the request arrived
    token: str = field(repr=False)  # the Bearer token it came with
    body: str | None = None  # payload["body"] for text messages

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SentRecord:
        return cls(
            seq=int(d["seq"]),
            id=str(d["id"]),
            to=str(d["to"]),
            chat_id=str(d["chat_id"]),
            type=str(d["type"]),
            payload=dict(d["payload"]),
            received_at=float(d["received_at"]),
            token=str(d["token"]),
            body=d.get("body"),
        )


@dataclass(frozen=True, slots=True)
class TokenStats:
    accepted: int
    rejected: dict[int, int]


@dataclass(frozen=True, slots=True)
class SimulatorStats:
    accepted: int
    rejected: dict[int, int]  # HTTP status -> count (validation, auth, injected)
    requests: int  # send requests received, whatever happened to them
    in_flight: int
    max_in_flight: int
    hangs: int  # requests that were left hanging (never answered)
    hanging: int  # of which still hanging now
    tokens: dict[str, TokenStats] = field(repr=False)
    last_seq: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SimulatorStats:
        def statuses(m: Mapping[str, Any]) -> dict[int, int]:
            return {int(k): int(v) for k, v in m.items()}

        return cls(
            accepted=int(d["accepted"]),
            rejected=statuses(d["rejected"]),
            requests=int(d["requests"]),
            in_flight=int(d["in_flight"]),
            max_in_flight=int(d["max_in_flight"]),
            hangs=int(d["hangs"]),
            hanging=int(d["hanging"]),
            tokens={
                tok: TokenStats(accepted=int(t["accepted"]), rejected=statuses(t["rejected"]))
                for tok, t in d["tokens"].items()
            },
            last_seq=int(d.get("last_seq", 0)),
        )


class SimulatorControl:
    """Typed synchronous client for the simulator's `/_sim/` control API."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, trust_env=False, verify=_ssl_context()
        )

    def __repr__(self) -> str:
        return f"SimulatorControl({self.base_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SimulatorControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _json(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            raise RuntimeError(
                f"simulator control {resp.request.method} {resp.request.url.path}: "
                f"HTTP {resp.status_code}: {resp.text[:300]}"
            )
        return resp.json()

    def sent(
        self,
        token: str | None = None,
        since: int = 0,
        *,
        to: str | None = None,
        limit: int | None = None,
        page_size: int = 20_000,
    ) -> list[SentRecord]:
        """Accepted sends with seq > since, in arrival order (all pages unless `limit`)."""
        out: list[SentRecord] = []
        while True:
            want = page_size if limit is None else min(page_size, limit - len(out))
            if want <= 0:
                return out
            params: dict[str, str | int] = {"since": since, "limit": want}
            if token is not None:
                params["token"] = token
            if to is not None:
                params["to"] = to
            page = self._json(self._http.get("/_sim/sent", params=params))
            out.extend(SentRecord.from_json(r) for r in page["records"])
            since = int(page["next_since"])
            if not page["has_more"]:
                return out

    def stats(self) -> SimulatorStats:
        return SimulatorStats.from_json(self._json(self._http.get("/_sim/stats")))

    def faults(self) -> list[dict[str, Any]]:
        faults: list[dict[str, Any]] = self._json(self._http.get("/_sim/faults"))["faults"]
        return faults

    def set_faults(
        self,
        *,
        token: str | None = None,
        to: str | None = None,
        latency_ms: float | None = None,
        latency_jitter_ms: float | None = None,
        error_rate: float | None = None,
        error_status: int | None = None,
        retry_after: float | str | None = None,
        rate_limit_per_s: float | None = None,
        hang: bool | None = None,
        hang_rate: float | None = None,
        hang_after_send: bool | None = None,
    ) -> list[dict[str, Any]]:
        """Replace the faults of one scope (global, token, recipient, or both).

        `error_status` without `error_rate` fails every request. `retry_after`
        (seconds, or a raw header string) is sent with 429s only. Returns the
        whole fault configuration.
        """
        body: dict[str, Any] = {"token": token, "to": to}
        fields = {
            "latency_ms": latency_ms,
            "latency_jitter_ms": latency_jitter_ms,
            "error_rate": error_rate,
            "error_status": error_status,
            "retry_after": retry_after,
            "rate_limit_per_s": rate_limit_per_s,
            "hang": hang,
            "hang_rate": hang_rate,
            "hang_after_send": hang_after_send,
        }
        body.update({k: v for k, v in fields.items() if v is not None})
        faults: list[dict[str, Any]] = self._json(self._http.post("/_sim/faults", json=body))[
            "faults"
        ]
        return faults

    def clear_faults(self, *, token: str | None = None, to: str | None = None) -> None:
        """Clear one scope's faults, or every fault when neither is given."""
        params = {k: v for k, v in (("token", token), ("to", to)) if v is not None}
        self._json(self._http.delete("/_sim/faults", params=params))

    def reset(self) -> None:
        """Clear faults, records and counters (sequence numbers keep growing)."""
        self._json(self._http.post("/_sim/reset"))


class SimulatorStartError(RuntimeError):
    """The simulator subprocess died or never became healthy."""


@dataclass(slots=True)
class SimulatorHandle:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def output(self) -> str:
        """Everything the subprocess printed so far (stdout and stderr)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def control(self) -> SimulatorControl:
        return SimulatorControl(self.url)


_LISTENING = re.compile(re.escape(LISTENING_PREFIX) + r"(http://\S+)")


@contextlib.contextmanager
def start_simulator(
    port: int = 0,
    *,
    host: str = "127.0.0.1",
    startup_timeout: float = 20.0,
    extra_args: tuple[str, ...] = (),
) -> Iterator[SimulatorHandle]:
    """Run `python -m providers.simulator` in a subprocess for the block.

    `port=0` lets the OS pick a free port; the handle's `.url` is the real
    one. Waits (at most `startup_timeout` s) until `/health` answers, and
    raises `SimulatorStartError` with the subprocess output if it dies or
    never gets there. Terminates it on exit.
    """
    fd, log_name = tempfile.mkstemp(prefix="whapi-sim-", suffix=".log")
    log_path = Path(log_name)
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_REPO_ROOT), env.get("PYTHONPATH", "")) if p
    )
    cmd = [sys.executable, "-m", "providers.simulator", "--host", host, "--port", str(port)]
    with os.fdopen(fd, "wb") as log_file:
        proc = subprocess.Popen(
            [*cmd, *extra_args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    handle = SimulatorHandle(url="", port=port, process=proc, log_path=log_path)
    try:
        _wait_ready(handle, startup_timeout)
        yield handle
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            log_path.unlink()


def _wait_ready(handle: SimulatorHandle, startup_timeout: float) -> None:
    deadline = time.monotonic() + startup_timeout
    with httpx.Client(timeout=1.0, trust_env=False) as http:
        while True:
            rc = handle.process.poll()
            if rc is not None:
                raise SimulatorStartError(
                    f"simulator exited with code {rc} before it was ready; output:\n"
                    f"{handle.output()[-4000:]}"
                )
            if not handle.url:
                m = _LISTENING.search(handle.output())
                if m:
                    handle.url = m.group(1)
                    handle.port = int(handle.url.rsplit(":", 1)[1])
            if handle.url:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get(f"{handle.url}/health").status_code == 200:
                        return
            if time.monotonic() > deadline:
                raise SimulatorStartError(
                    f"simulator not healthy after {startup_timeout:g}s; output:\n"
                    f"{handle.output()[-4000:]}"
                )
            time.sleep(0.05)
