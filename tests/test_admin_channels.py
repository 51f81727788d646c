"""The channel service on its named statements (db/admin_queries.py): what
each write leaves in the row, beyond what the CLI tests read back."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox import crypto
from outbox.admin.channels import (
    create_channel,
    get_channel,
    list_channels,
    pause_channel,
    resume_channel,
    webhook_secret_of,
)
from outbox.errors import CryptoError, InvalidInput
from tests.conftest import TEST_KEY


def _row(engine: Engine, channel_id: object) -> dict[str, object]:
    with engine.connect() as conn:
        return dict(conn.execute(text(
            "SELECT c.*, now() AS db_now, t.encrypted_token, t.key_id FROM outbox.channels c "
            "LEFT JOIN outbox.channel_tokens t ON t.channel_id = c.id WHERE c.id = :id"),
            {"id": channel_id}).one()._mapping)


def test_create_stores_the_channel_and_its_encrypted_token(clean_db: Engine) -> None:
    with Session(clean_db) as s, s.begin():
        info = create_channel(s, name=" shop ", phone_number="+1 555 000 0042", token="tok-1",
                              encryption_key=TEST_KEY, workspace_id="team-a",
                              base_url="https://whapi.test/")
    assert (info.name, info.phone_number, info.workspace_id, info.base_url, info.provider,
            info.status, info.paused_until, info.pause_reason) == (
        "shop", "+15550000042", "team-a", "https://whapi.test", "whapi", "active", None, None)
    row = _row(clean_db, info.id)
    bound = crypto.Binding(info.id, "https://whapi.test")
    assert crypto.decrypt_token(str(row["encrypted_token"]), TEST_KEY, bound) == "tok-1"
    assert row["key_id"] == crypto.key_id(TEST_KEY)
    secret = webhook_secret_of(info.id, str(row["webhook_secret"]), info.base_url, [TEST_KEY])
    assert len(secret) >= 40 and secret not in str(row["webhook_secret"])
    with Session(clean_db) as s:
        assert list_channels(s, workspace_id="team-a") == [info]
        assert list_channels(s, workspace_id="team-b") == []
        assert get_channel(s, info.id).webhook_secret == row["webhook_secret"]


def test_a_base_url_must_be_https_except_on_loopback(clean_db: Engine) -> None:
    def create(url: str, **kw: object) -> object:
        with Session(clean_db) as s, s.begin():
            return create_channel(s, name="c", phone_number="+15550000042", token="t",
                                  encryption_key=TEST_KEY, base_url=url, **kw)

    for refused in ("http://whapi.example", "ftp://whapi.example", "https://", "whapi.example"):
        with pytest.raises(InvalidInput) as info:
            create(refused)
        assert info.value.field == "base_url"
    for accepted in ("http://127.0.0.1:8099", "http://localhost:8099", "http://[::1]:8099"):
        create(accepted)
    create("http://simulator:8099", allow_http=True)
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outbox.channels")).scalar_one() == 4


def test_a_weak_key_is_refused_before_anything_is_written(clean_db: Engine) -> None:
    for weak in ("a passphrase of an older version", "", crypto.generate_key()[:20],
                 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="):
        with Session(clean_db) as s, s.begin(), pytest.raises(CryptoError) as info:
            create_channel(s, name="c", phone_number="+15550000042", token="t",
                           encryption_key=weak)
        assert "OUTBOX_ENCRYPTION_KEY" in str(info.value)
    with clean_db.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outbox.channels")).scalar_one() == 0


def test_pause_for_a_while_then_resume_with_a_clean_slate(make_channel,
                                                         clean_db: Engine) -> None:
    channel = make_channel()
    with clean_db.begin() as conn:  # as a rate-limit event leaves it
        conn.execute(text("UPDATE outbox.channels SET rate_limit_strikes = 3, "
                          "rate_limited_at = now() WHERE id = :id"), {"id": channel})
    with Session(clean_db) as s, s.begin():
        info = pause_channel(s, channel, seconds=90, reason="maintenance")
    row = _row(clean_db, channel)
    assert (row["status"], row["pause_reason"], row["pause_cause"]) == (
        "paused", "maintenance", "manual")
    assert info.paused_until == row["paused_until"]
    until = row["paused_until"] - row["db_now"]  # type: ignore[operator]
    assert timedelta(seconds=80) < until <= timedelta(seconds=90)

    with Session(clean_db) as s, s.begin():
        info = resume_channel(s, channel)
    row = _row(clean_db, channel)
    assert (info.status, info.paused_until, info.pause_reason) == ("active", None, None)
    assert (row["status"], row["paused_until"], row["pause_reason"], row["pause_cause"],
            row["rate_limit_strikes"], row["rate_limited_at"]) == (
        "active", None, None, None, 0, None)
