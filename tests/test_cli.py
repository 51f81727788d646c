"""The `outbox` command line against the test database (OUTBOX_DATABASE_URL
from the fixture), run in this process (tests/test_cli_process.py runs it as
a process of its own)."""

from __future__ import annotations

import json
import re
import secrets
import uuid

import pytest
from sqlalchemy import Engine, text

from tests.dispatch_helpers import cli

UUID_LINE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n")
COUNTED = ("channels", "channel_tokens", "contacts", "chats", "messages", "outbox_messages")


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT count(*) FROM outbox.{t}")).scalar_one()
                for t in COUNTED}


def _one_line_error(proc, *, names: str | None = None) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    if names is not None:
        assert names in lines[0], lines[0]


def _add_channel(token: str, *extra: str, name: str = "shop"):  # type: ignore[no-untyped-def]
    return cli("channel", "add", "--name", name, "--phone", "+15550001111", "--token-stdin",
               *extra, input=token + "\n")


# --- the happy path, and the token never shows ---------------------------------------


def test_channel_add_list_send_status_never_show_the_token(clean_db: Engine) -> None:
    token = secrets.token_hex(16)
    added = _add_channel(token)
    assert added.returncode == 0, added.stderr
    assert UUID_LINE.fullmatch(added.stdout), added.stdout
    channel_id = added.stdout.strip()

    listed = cli("channel", "list")
    assert listed.returncode == 0 and channel_id in listed.stdout and "shop" in listed.stdout
    listed_json = cli("channel", "list", "--json")
    (entry,) = json.loads(listed_json.stdout)
    assert entry["id"] == channel_id and entry["status"] == "active"
    assert entry["phone_number"] == "+15550001111"

    sent = cli("send", "--channel", channel_id, "--to", "+15550002222", "--text", "hello")
    assert sent.returncode == 0, sent.stderr
    assert UUID_LINE.fullmatch(sent.stdout)
    message_id = uuid.UUID(sent.stdout.strip())

    status = cli("status", "--json")
    assert status.returncode == 0, status.stderr
    body = json.loads(status.stdout)
    assert body["totals"]["queued"] == 1
    assert [c["id"] for c in body["channels"]] == [channel_id]
    plain = cli("status")
    assert plain.returncode == 0 and "TOTAL" in plain.stdout

    for proc in (added, listed, listed_json, sent, status, plain):
        assert token not in proc.stdout and token not in proc.stderr

    with clean_db.connect() as conn:
        dumped = conn.execute(text(
            "SELECT string_agg(row_to_json(t)::text, ' ') FROM "
            "(SELECT * FROM outbox.channels c "
            "JOIN outbox.channel_tokens ct ON ct.channel_id = c.id) t"
        )).scalar_one()
        msg = conn.execute(text("SELECT body, status FROM outbox.messages WHERE id = :id"),
                           {"id": message_id}).one()
    assert token not in dumped
    assert (msg.body, msg.status) == ("hello", "pending")


def test_send_idempotency_key_reuses_the_message(make_channel, clean_db: Engine) -> None:
    channel = str(make_channel())
    args = ("send", "--channel", channel, "--to", "+15550002222", "--text", "hi",
            "--idempotency-key", "order-1")
    first, second = cli(*args), cli(*args)
    assert first.returncode == second.returncode == 0
    assert first.stdout == second.stdout
    assert "idempotency key already used" in second.stderr
    assert _counts(clean_db)["outbox_messages"] == 1


# --- bad input: exit 2, one line, nothing written ------------------------------------------


@pytest.mark.parametrize(("case", "overrides", "names"), [
    ("invalid phone", {"--to": "12"}, None),
    ("letters for phone", {"--to": "call me maybe"}, None),
    ("empty text", {"--text": ""}, None),
    ("blank text", {"--text": "   "}, None),
    ("4097-char text", {"--text": "x" * 4097}, "4096"),
    ("unknown channel", {"--channel": "00000000-0000-4000-8000-000000000000"}, "channel"),
    ("malformed channel id", {"--channel": "not-a-uuid"}, "channel"),
    ("--at without timezone", {"--at": "2030-01-31T09:00:00"}, None),
    ("--at garbage", {"--at": "next tuesday"}, "--at"),
])
def test_send_bad_input(case, overrides, names, make_channel, clean_db: Engine) -> None:
    args = {"--channel": str(make_channel()), "--to": "+15550002222", "--text": "hello"}
    args.update(overrides)
    before = _counts(clean_db)
    proc = cli("send", *[x for kv in args.items() for x in kv])
    _one_line_error(proc, names=names)
    assert _counts(clean_db) == before


def test_send_to_disabled_channel(make_channel, clean_db: Engine) -> None:
    channel = str(make_channel(status="disabled"))
    before = _counts(clean_db)
    proc = cli("send", "--channel", channel, "--to", "+15550002222", "--text", "hello")
    _one_line_error(proc, names="disabled")
    assert _counts(clean_db) == before


def test_text_of_exactly_4096_chars_is_accepted(make_channel) -> None:
    proc = cli("send", "--channel", str(make_channel()), "--to", "+15550002222",
               "--text", "x" * 4096)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(("case", "stdin", "env", "flag", "names"), [
    ("no token on stdin", "", {}, True, "token"),
    ("blank token on stdin", "   \n", {}, True, "token"),
    ("no --token-stdin", "sometoken123\n", {}, False, "--token-stdin"),
    ("no encryption key", "sometoken123\n", {"OUTBOX_ENCRYPTION_KEY": ""}, True,
     "OUTBOX_ENCRYPTION_KEY"),
])
def test_channel_add_bad_input(case, stdin, env, flag, names, clean_db: Engine) -> None:
    before = _counts(clean_db)
    args = ["channel", "add", "--name", "x", "--phone", "+15550001111"]
    if flag:
        args.append("--token-stdin")
    proc = cli(*args, input=stdin, env=env)
    _one_line_error(proc, names=names)
    assert "sometoken123" not in proc.stderr
    assert _counts(clean_db) == before


@pytest.mark.parametrize(("phone", "names"), [
    ("nope", None), ("120363025343298765@g.us", "group"),
    ("183729465018273@lid", "linked id"), ("status@broadcast", None)])
def test_channel_add_invalid_phone(phone: str, names: str | None, clean_db: Engine) -> None:
    token = secrets.token_hex(16)
    proc = cli("channel", "add", "--name", "x", "--phone", phone, "--token-stdin",
               input=token + "\n")
    _one_line_error(proc, names=names)
    assert token not in proc.stderr
    assert _counts(clean_db)["channels"] == 0


@pytest.mark.parametrize("command", [("status",), ("channel", "list"), ("db", "url")])
def test_malformed_setting_names_the_variable(command, database_url: str) -> None:
    proc = cli(*command, env={"OUTBOX_BATCH_SIZE": "abc"})
    _one_line_error(proc, names="OUTBOX_BATCH_SIZE")


def test_out_of_range_setting_names_the_variable(database_url: str) -> None:
    proc = cli("status", env={"OUTBOX_LEASE_SECONDS": "0"})
    _one_line_error(proc, names="OUTBOX_LEASE_SECONDS")


def test_unknown_command_is_one_line(database_url: str) -> None:
    proc = cli("frobnicate")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1


# --- db -------------------------------------------------------------------------------------


def test_db_url_and_current(database_url: str) -> None:
    from sqlalchemy.engine import make_url

    url = cli("db", "url")
    assert url.returncode == 0
    assert make_url(url.stdout.strip()).database == make_url(database_url).database
    libpq = cli("db", "url", "--libpq")
    assert libpq.returncode == 0 and libpq.stdout.startswith("postgresql://")

    current = cli("db", "current", "--check")
    assert current.returncode == 0, current.stdout + current.stderr
    assert "(head: " in current.stdout and "run: outbox db upgrade" not in current.stdout


# --- channel pause / resume --------------------------------------------------------------------


def _channel_state(channel_id: str) -> dict[str, object]:
    proc = cli("channel", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    (entry,) = [c for c in json.loads(proc.stdout) if c["id"] == channel_id]
    return entry  # type: ignore[no-any-return]


def test_channel_pause_and_resume(make_channel, clean_db: Engine) -> None:
    channel = str(make_channel())
    paused = cli("channel", "pause", channel)
    assert paused.returncode == 0 and "until resumed" in paused.stdout
    state = _channel_state(channel)
    assert state["status"] == "paused" and state["paused_until"] is None
    assert state["pause_reason"] == "paused by operator"

    timed = cli("channel", "pause", channel, "--for", "600")
    assert timed.returncode == 0, timed.stderr
    assert _channel_state(channel)["paused_until"] is not None

    resumed = cli("channel", "resume", channel)
    assert resumed.returncode == 0 and "active" in resumed.stdout
    state = _channel_state(channel)
    assert state["status"] == "active" and state["paused_until"] is None

    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.channels SET status = 'disabled'"))
    assert cli("channel", "resume", channel).returncode == 0
    assert _channel_state(channel)["status"] == "active"


@pytest.mark.parametrize("args", [
    ("channel", "pause", "00000000-0000-4000-8000-000000000000"),
    ("channel", "resume", "00000000-0000-4000-8000-000000000000"),
    ("channel", "pause", "not-a-uuid"),
])
def test_channel_pause_resume_bad_input(args, make_channel, clean_db: Engine) -> None:
    make_channel()
    _one_line_error(cli(*args))


def test_channel_pause_negative_duration(make_channel, clean_db: Engine) -> None:
    channel = str(make_channel())
    _one_line_error(cli("channel", "pause", channel, "--for", "-5"))
    assert _channel_state(channel)["status"] == "active"


# --- retry + dispatch --once against the simulator -------------------------------------------


def test_retry_requeues_failed_and_dispatch_once_sends(clean_db: Engine, sim, sim_url) -> None:
    token = secrets.token_hex(16)
    added = _add_channel(token, "--base-url", sim_url)
    assert added.returncode == 0, added.stderr
    channel = added.stdout.strip()
    sent = cli("send", "--channel", channel, "--to", "+15550002222", "--text", "try again")
    assert sent.returncode == 0, sent.stderr
    message_id = sent.stdout.strip()
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.outbox_messages SET status = 'failed', attempts = 5, "
                          "last_error = 'gave up after 5 attempts: HTTP 503'"))
        conn.execute(text("UPDATE outbox.messages SET status = 'failed', error = 'HTTP 503'"))

    status = json.loads(cli("status", "--json").stdout)
    assert status["totals"]["failed"] == 1
    assert [d["message_id"] for d in status["dead_letters"]] == [message_id]

    retried = cli("retry")
    assert retried.returncode == 0 and retried.stdout.strip() == "requeued 1 failed message"
    with clean_db.connect() as conn:
        row = conn.execute(text("SELECT status, attempts FROM outbox.outbox_messages")).one()
        msg = conn.execute(text("SELECT status, error FROM outbox.messages")).one()
    assert (row.status, row.attempts) == ("queued", 0)
    assert (msg.status, msg.error) == ("pending", None)
    assert cli("retry").stdout.strip() == "requeued 0 failed messages"

    dispatched = cli("dispatch", "--once", "--json")
    assert dispatched.returncode == 0, dispatched.stderr
    summary = json.loads(dispatched.stdout)
    assert summary["sent"] == 1 and summary["failed"] == 0
    (record,) = sim.sent()
    assert record.token == token and record.body == "try again"
    assert record.to == "15550002222@s.whatsapp.net"
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT status FROM outbox.messages")).scalar_one() == "sent"
    for proc in (added, sent, retried, dispatched):
        assert token not in proc.stdout + proc.stderr


def test_dispatch_without_once_is_one_line(database_url: str) -> None:
    _one_line_error(cli("dispatch"), names="--once")
