"""The database URL's password is a secret: never in the settings' repr or
dump, in any command's output or error line, or in a log line.

The shared test server trusts loopback connections, so a URL with a
password still connects: every command below does real work with it.
"""

from __future__ import annotations

import io
import json
import secrets
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from outbox.logging import configure_logging, scrub_text
from outbox.settings import Settings
from tests.dispatch_helpers import cli
from tests.sim_fixtures import unused_port

PASSWORD = "pw-" + secrets.token_hex(8)


def with_password(url: str, password: str = PASSWORD) -> str:
    return make_url(url).set(password=password).render_as_string(hide_password=False)


@pytest.fixture
def secret_url(database_url: str) -> str:
    return with_password(database_url)


def test_settings_never_show_the_password(secret_url: str) -> None:
    s = Settings(_env_file=None, database_url=secret_url,  # type: ignore[call-arg]
                 listen_database_url=secret_url)
    for shown in (repr(s), str(s), s.model_dump_json(), repr(s.model_dump()),
                  json.dumps(s.model_dump(mode="json"))):
        assert PASSWORD not in shown
    assert s.database_url is not None and PASSWORD in s.database_url.get_secret_value()


def test_app_context_repr_hides_the_url(secret_url: str) -> None:
    from outbox.api import create_app
    from tests.api_fixtures import app_settings

    app = create_app(app_settings(secret_url))
    try:
        assert PASSWORD not in repr(app.state.outbox)
    finally:
        app.state.outbox.engine.dispose()


@pytest.mark.parametrize("command", [
    ("db", "current"), ("db", "upgrade"), ("status",), ("channel", "list"), ("db", "url"),
    ("db", "url", "--libpq")])
def test_commands_never_print_it(command: tuple[str, ...], secret_url: str) -> None:
    proc = cli(*command, env={"OUTBOX_DATABASE_URL": secret_url})
    assert proc.returncode == 0, proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr


def test_db_url_prints_it_only_when_asked(secret_url: str) -> None:
    shown = cli("db", "url", "--libpq", env={"OUTBOX_DATABASE_URL": secret_url})
    assert make_url(shown.stdout.strip()).password == "***"
    asked = cli("db", "url", "--libpq", "--show-password", env={"OUTBOX_DATABASE_URL": secret_url})
    assert make_url(asked.stdout.strip()).password == PASSWORD


@pytest.mark.parametrize("url", [
    f"postgresql://outbox:{PASSWORD}@127.0.0.1:{unused_port()}/outbox",  # nobody listens
    f"postgresql://outbox:{PASSWORD}@127.0.0.1:notaport/outbox",  # unparsable
    f"mysql://outbox:{PASSWORD}@127.0.0.1/outbox",  # not PostgreSQL
], ids=["nobody-listens", "bad-port", "not-postgresql"])
@pytest.mark.parametrize("command", [("db", "current"), ("status",), ("db", "upgrade")])
def test_errors_never_print_it(url: str, command: tuple[str, ...]) -> None:
    proc = cli(*command, env={"OUTBOX_DATABASE_URL": url})
    assert proc.returncode != 0
    assert proc.stderr.strip(), "an error says what went wrong"
    assert PASSWORD not in proc.stdout + proc.stderr


def test_logs_mask_it_wherever_it_turns_up(secret_url: str, monkeypatch: Any) -> None:
    import structlog

    from outbox.database import normalize_url

    normalize_url(secret_url)  # what every process does with OUTBOX_DATABASE_URL
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    configure_logging(level="INFO", json=True)
    log = structlog.get_logger("test")
    log.warning("connect_failed", error=f"could not connect with password {PASSWORD}")
    log.warning("url_seen", where=secret_url)
    out = stream.getvalue()
    assert out.count("connect_failed") == 1 and out.count("url_seen") == 1
    assert PASSWORD not in out
    # Any URL's password, registered or not.
    assert "hunter22" not in scrub_text("redis://:hunter22@cache:6379/0 and "
                                        "postgresql://app:hunter22@db/app")
