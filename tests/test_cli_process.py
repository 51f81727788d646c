"""The `outbox` command as a process of its own (`python -m outbox`, the
console script): what the in-process tests elsewhere can't show, namely
that the entry points start, and that output and exit status arrive through
a real interpreter's streams."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.dispatch_helpers import REPO, cli

pytestmark = pytest.mark.slow  # the CLI in processes of its own

COMMANDS = ("db", "channel", "send", "run", "dispatch", "status", "retry", "simulator", "serve",
            "apikey", "chats", "tokens")


def test_help_through_both_entry_points() -> None:
    top = cli("--help", separate_process=True)
    assert top.returncode == 0 and top.stderr == "", top.stderr
    assert top.stdout.startswith("usage: outbox")
    assert all(command in top.stdout for command in COMMANDS)
    group = cli("db", "--help", separate_process=True)
    assert group.returncode == 0 and group.stdout.startswith("usage: outbox db")

    # `outbox = "outbox.cli:main"` in pyproject.toml, installed beside the interpreter.
    script = Path(sys.executable).with_name("outbox")
    if not script.exists():
        pytest.skip("the console script is not installed (pip install -e .)")
    installed = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                               timeout=60, cwd=REPO)
    assert (installed.returncode, installed.stdout) == (0, top.stdout)


def test_db_current_then_upgrade(fresh_database_url: str) -> None:
    env = {"OUTBOX_DATABASE_URL": fresh_database_url}
    behind = cli("db", "current", "--check", env=env, separate_process=True)
    assert behind.returncode == 1, behind.stderr
    assert behind.stdout.startswith("empty (head: ") and "run: outbox db upgrade" in behind.stdout

    upgraded = cli("db", "upgrade", env=env, separate_process=True)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "empty -> " in upgraded.stdout
    assert cli("db", "current", "--check", env=env, separate_process=True).returncode == 0


def test_add_send_and_dispatch_once(clean_db: Engine, sim, sim_url: str) -> None:  # type: ignore[no-untyped-def]
    token = secrets.token_hex(16)
    added = cli("channel", "add", "--name", "shop", "--phone", "+15550001111", "--token-stdin",
                "--base-url", sim_url, input=token + "\n", separate_process=True)
    assert added.returncode == 0, added.stderr
    sent = cli("send", "--channel", added.stdout.strip(), "--to", "+15550002222",
               "--text", "hello", separate_process=True)
    assert sent.returncode == 0, sent.stderr

    dispatched = cli("dispatch", "--once", "--json", separate_process=True)
    assert dispatched.returncode == 0, dispatched.stderr
    assert json.loads(dispatched.stdout)["sent"] == 1
    (record,) = sim.sent()
    assert (record.token, record.body) == (token, "hello")


@pytest.mark.parametrize("args", [
    ("frobnicate",),                                                     # refused by the parser
    ("send", "--channel", "not-a-uuid", "--to", "+15550002222", "--text", "hi"),  # by a service
])
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], database_url: str) -> None:
    proc = cli(*args, separate_process=True)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ")
