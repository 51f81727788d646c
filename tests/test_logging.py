from __future__ import annotations

import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from outbox.errors import ConfigurationError
from outbox.logging import (
    REDACTED,
    clear_secrets,
    configure_logging,
    redact_event,
    register_secret,
    scrub_text,
)
from outbox.logging import _unconfigure as unconfigure

TOKEN = "Xq9LmT3vB7pR2sK8wN4yZ6cF1hJ5dG0a"


@pytest.fixture(autouse=True)
def _clean_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    unconfigure()
    clear_secrets()
    root.setLevel(level)


def redact(**event: Any) -> dict[str, Any]:
    return dict(redact_event(None, "info", event))


def json_lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


# --- redaction by key ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "access_token",
        "encrypted_token",
        "Authorization",
        "authorization",
        "secret",
        "webhook_secret",
        "password",
        "db_password",
        "api_key",
        "X-Api-Key",
        "apikey",
        "encryption_key",
        "OUTBOX_ENCRYPTION_KEY",
        "cookie",
        "body",
        "text",
        "caption",
        "message_text",
        "body_preview",
        "last_message_preview",
        "vcard",
    ],
)
def test_sensitive_keys_are_redacted(key: str) -> None:
    out = redact(event="e", **{key: "s3cr3t value"})
    assert out[key] == REDACTED


@pytest.mark.parametrize("value", [{"a": "b"}, ["x", "y"], b"raw bytes", object(), ("t",)])
def test_any_kind_of_value_under_a_sensitive_key_is_redacted(value: object) -> None:
    assert redact(token=value)["token"] == REDACTED


@pytest.mark.parametrize(
    "key",
    ["channel_id", "key_id", "claim_token", "status", "context", "textual", "wa_chat_id", "to"],
)
def test_other_keys_are_kept(key: str) -> None:
    assert redact(**{key: "value 1"})[key] == "value 1"


def test_flags_and_numbers_under_sensitive_keys_are_kept() -> None:
    out = redact(has_token=True, body_chars=120, text_ratio=0.5, token=None)
    assert out == {"has_token": True, "body_chars": 120, "text_ratio": 0.5, "token": None}


def test_nested_structures() -> None:
    out = redact(
        request={
            "headers": {"Authorization": "Bearer abc", "Content-Type": "application/json"},
            "json": {"to": "15551234567@s.whatsapp.net", "body": "hello there"},
            "media": [{"caption": "a photo", "url": "https://x/y.jpg"}],
        },
        batch=[{"id": 1, "text": "hi"}, ("tuple", {"password": "p"})],
    )
    assert out["request"] == {
        "headers": {"Authorization": REDACTED, "Content-Type": "application/json"},
        "json": {"to": "15551234567@s.whatsapp.net", "body": REDACTED},
        "media": [{"caption": REDACTED, "url": "https://x/y.jpg"}],
    }
    assert out["batch"] == [{"id": 1, "text": REDACTED}, ["tuple", {"password": REDACTED}]]


def test_the_input_event_is_not_mutated() -> None:
    inner = {"token": "abc"}
    event = {"event": "e", "data": inner}
    redact_event(None, "info", event)
    assert inner == {"token": "abc"}


def test_deep_and_cyclic_structures_terminate() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    out = redact(data=cyclic)
    assert "[too deep]" in json.dumps(out)


# --- redaction inside strings -----------------------------------------------------------


def test_registered_secret_inside_free_text() -> None:
    register_secret(TOKEN)
    out = redact(
        event=f"whapi said: invalid token {TOKEN}!",
        detail={"nested": [f"x{TOKEN}y"]},
        obj=ValueError(f"bad {TOKEN}"),
    )
    assert out["event"] == f"whapi said: invalid token {REDACTED}!"
    assert out["detail"] == {"nested": [f"x{REDACTED}y"]}
    assert TOKEN not in out["obj"]
    assert "ValueError" in out["obj"]


def test_longest_secret_is_masked_whole() -> None:
    register_secret("abcdef")
    register_secret("abcdefghij")
    assert scrub_text("<abcdefghij>") == f"<{REDACTED}>"


def test_short_and_duplicate_secrets() -> None:
    register_secret("abc")  # too short to mask everywhere: ignored
    register_secret(TOKEN)
    register_secret(TOKEN)
    assert scrub_text("abc abc") == "abc abc"
    assert scrub_text(TOKEN + TOKEN) == REDACTED + REDACTED


def test_clear_secrets() -> None:
    register_secret(TOKEN)
    clear_secrets()
    assert scrub_text(TOKEN) == TOKEN


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.DEF-123_~+/==", f"Authorization: Bearer {REDACTED}"),
        ("header was bearer xyz", f"header was bearer {REDACTED}"),
        ("BEARER   xyz and more", f"BEARER {REDACTED} and more"),
        ("BeArEr xyz", f"BeArEr {REDACTED}"),
        ("'Bearer abc'", f"'Bearer {REDACTED}'"),
        ("the bearer of bad news", f"the bearer {REDACTED} bad news"),  # over-eager is fine
        ("no credentials here", "no credentials here"),
        (
            "GET https://gate.whapi.cloud/health?token=abc123",
            f"GET https://gate.whapi.cloud/health?token={REDACTED}",
        ),
        ("https://x/y?a=1&token=abc&b=2", f"https://x/y?a=1&token={REDACTED}&b=2"),
        ("https://x/y?api_key=abc#frag", f"https://x/y?api_key={REDACTED}#frag"),
        ("key_id=abc123 status=ok", "key_id=abc123 status=ok"),
    ],
)
def test_credentials_in_strings(text: str, expected: str) -> None:
    assert scrub_text(text) == expected
    assert redact(event=text)["event"] == expected


def test_redaction_is_cheap_enough() -> None:
    for i in range(1_000):  # a thousand channels' tokens
        register_secret(f"{i:06d}" + TOKEN)
    event = {
        "event": "batch completed",
        "channel_id": 42,
        "sent": 100,
        "failed": 2,
        "error": "HTTP 500 from https://gate.whapi.cloud/messages/text",
    }
    start = time.perf_counter()
    for _ in range(1_000):
        redact_event(None, "info", dict(event))
    assert time.perf_counter() - start < 2.0


# --- configuration and output ---------------------------------------------------------------


def test_json_lines_on_stderr_when_not_a_tty(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    register_secret(TOKEN)
    log = structlog.get_logger("outbox.dispatcher")
    log.info("batch sent", channel_id=7, token=TOKEN, note=f"with {TOKEN}")
    log.debug("not shown at INFO")
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = json_lines(err)
    assert line["event"] == "batch sent"
    assert line["level"] == "info"
    assert line["logger"] == "outbox.dispatcher"
    assert line["channel_id"] == 7
    assert line["token"] == REDACTED
    assert line["note"] == f"with {REDACTED}"
    assert TOKEN not in err
    stamp = datetime.fromisoformat(line["timestamp"])
    assert line["timestamp"].endswith("Z")
    assert stamp.utcoffset() == UTC.utcoffset(None)
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def test_stdlib_logs_come_out_in_the_same_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    register_secret(TOKEN)
    logging.getLogger("alembic.runtime.migration").warning("Running upgrade %s -> %s", "a1", "b2")
    logging.getLogger("httpx").warning(
        "HTTP Request: POST https://gate.whapi.cloud/messages/text?token=%s", TOKEN
    )
    logging.getLogger("apscheduler").warning("extra", extra={"password": "p", "job": "tick"})
    structlog.get_logger("outbox").info("ours")
    lines = json_lines(capsys.readouterr().err)
    assert [line["logger"] for line in lines] == [
        "alembic.runtime.migration",
        "httpx",
        "apscheduler",
        "outbox",
    ]
    assert lines[0]["event"] == "Running upgrade a1 -> b2"
    assert lines[1]["event"].endswith(f"?token={REDACTED}")
    assert lines[2]["password"] == REDACTED
    assert lines[2]["job"] == "tick"
    for line in lines:
        assert {"event", "level", "logger", "timestamp"} <= line.keys()


def test_chatty_libraries_are_held_to_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    """httpx logs every request and APScheduler every tick at INFO: noise (and
    CPU) at the dispatcher's rates."""
    configure_logging(json=True, level="DEBUG")
    logging.getLogger("httpx").info("HTTP Request: POST ...")
    logging.getLogger("apscheduler.executors.default").info("Running job ...")
    logging.getLogger("alembic.runtime.plugins").info("setup plugin ...")
    logging.getLogger("apscheduler").warning("kept")
    structlog.get_logger("outbox").debug("ours")
    lines = json_lines(capsys.readouterr().err)
    assert [line["event"] for line in lines] == ["kept", "ours"]


def test_exceptions_are_rendered_scrubbed_and_without_locals(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(json=True)
    register_secret(TOKEN)

    def decrypt() -> None:
        plaintext = "local-plaintext-value"  # noqa: F841 - must not be shown
        raise RuntimeError(f"whapi rejected {TOKEN}")

    try:
        decrypt()
    except RuntimeError:
        structlog.get_logger("outbox").exception("send failed")
        logging.getLogger("stdlib").exception("send failed too")
    err = capsys.readouterr().err
    lines = json_lines(err)
    assert len(lines) == 2
    for line in lines:
        assert line["level"] == "error"
        assert "Traceback (most recent call last)" in line["exception"]
        assert f"RuntimeError: whapi rejected {REDACTED}" in line["exception"]
    assert TOKEN not in err
    assert "local-plaintext-value" not in err


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_output_on_a_tty(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", fake)
    configure_logging()
    structlog.get_logger("outbox").warning("paused channel", channel_id=3, token="abc")
    logging.getLogger("uvicorn").warning("stdlib line")
    out = fake.getvalue()
    lines = out.splitlines()
    assert len(lines) == 2
    assert "paused channel" in lines[0]
    assert "channel_id" in lines[0]
    assert REDACTED in lines[0]
    assert "abc" not in lines[0]
    assert "stdlib line" in lines[1]
    assert "uvicorn" in lines[1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


def test_json_can_be_forced_off_without_a_tty(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=False)
    structlog.get_logger("outbox").info("plain", n=1)
    err = capsys.readouterr().err
    assert "plain" in err
    assert "\x1b[" not in err  # no colours when not a terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(err)


def test_configure_is_idempotent(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    configure_logging(json=True)
    configure_logging(json=True)
    configure_logging(level="info", json=True)
    assert len(root.handlers) == len(before) + 1
    structlog.get_logger("outbox").info("once")
    assert len(json_lines(capsys.readouterr().err)) == 1


def test_reconfiguring_replaces_the_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    before = len(root.handlers)
    configure_logging(level="WARNING", json=True)
    configure_logging(level="DEBUG", json=True)
    assert len(root.handlers) == before + 1
    structlog.get_logger("outbox").debug("debug now shown")
    assert json_lines(capsys.readouterr().err)[0]["level"] == "debug"


def test_level_filters_structlog_and_stdlib(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level="WARNING", json=True)
    structlog.get_logger("outbox").info("hidden")
    logging.getLogger("apscheduler").info("hidden too")
    structlog.get_logger("outbox").warning("shown")
    assert [line["event"] for line in json_lines(capsys.readouterr().err)] == ["shown"]


def test_logger_made_before_configure_uses_it(capsys: pytest.CaptureFixture[str]) -> None:
    log = structlog.get_logger("outbox.early")  # e.g. at module import
    configure_logging(json=True)
    log.info("late", token="x")
    out, err = capsys.readouterr()
    assert out == ""
    assert json_lines(err)[0]["token"] == REDACTED


def test_context_variables_are_included(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(json=True)
    with structlog.contextvars.bound_contextvars(worker="w1", secret="s"):
        structlog.get_logger("outbox").info("claimed")
        logging.getLogger("stdlib").info("too")
    lines = json_lines(capsys.readouterr().err)
    for line in lines:
        assert line["worker"] == "w1"
        assert line["secret"] == REDACTED


@pytest.mark.parametrize("level", ["LOUD", "", "10"])
def test_invalid_level(level: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid log level"):
        configure_logging(level=level)


def test_level_names_are_case_and_space_insensitive(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(level=" warning ", json=True)
    structlog.get_logger("outbox").info("hidden")
    assert capsys.readouterr().err == ""
