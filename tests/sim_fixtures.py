"""Fixtures for the provider tests: a real Whapi simulator on loopback.

Import them into a test module:

    from tests.sim_fixtures import ctl, sim_url, whapi_sim  # noqa: F401
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Iterator

import pytest

from providers.simulator_control import SimulatorControl, SimulatorHandle, start_simulator


@pytest.fixture(scope="session")
def whapi_sim() -> Iterator[SimulatorHandle]:
    """One simulator subprocess (port picked by the OS)."""
    with start_simulator() as handle:
        yield handle


@pytest.fixture
def ctl(whapi_sim: SimulatorHandle) -> Iterator[SimulatorControl]:
    """Control client; the simulator is reset before and after each test."""
    control = whapi_sim.control()
    control.reset()
    yield control
    control.reset()
    control.close()


@pytest.fixture
def sim_url(whapi_sim: SimulatorHandle) -> str:
    return whapi_sim.url


def new_token() -> str:
    """A Whapi-looking token (32 alphanumerics), unique per call."""
    return secrets.token_hex(16)


def unused_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port
