"""A channel's new webhook secret (outbox/admin/webhook_secrets.py), over the
real server and CLI: the new secret works at once, the old one during its
grace window and not after (back-dated in the database, no sleeping); a
second rotation drops the first secret; another workspace's channel and bad
input change nothing; `outbox tokens rotate-key` and `check` handle the
previous secret; no secret reaches a log line."""

# ruff: noqa: F811  (pytest fixtures imported from tests.api_fixtures and test_security)
from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox import crypto
from outbox.admin.channels import WEBHOOK_SECRET, webhook_secret_of
from outbox.errors import CryptoError
from outbox.webhooks.apply import SECRET_HEADER
from tests.api_fixtures import api, api_db, auth, live_url  # noqa: F401
from tests.dispatch_helpers import TEST_KEY, cli, store_webhook_secret, webhook_secrets
from tests.test_security import debug_logging  # noqa: F401

STATUS_BODY = {"statuses": [{"id": "wa-unknown", "code": 3, "status": "delivered",
                             "recipient_id": "15550100001@s.whatsapp.net",
                             "timestamp": 1712995378}],
               "event": {"type": "statuses", "event": "post"}}


def hook(api: httpx.Client, channel_id: object, secret: str) -> int:
    """The status code of a webhook for the channel, sent with `secret`."""
    return api.post(f"/webhooks/whapi/{channel_id}", json=STATUS_BODY,
                    headers={SECRET_HEADER: secret}).status_code


def stored(engine: Engine, channel_id: object) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(
            "SELECT webhook_secret, previous_webhook_secret, previous_webhook_secret_until "
            "FROM outbox.channels WHERE id = :id"), {"id": channel_id}).one()


def previous_secret(engine: Engine, channel_id: uuid.UUID, key: str = TEST_KEY) -> str:
    row = stored(engine, channel_id)
    return webhook_secret_of(channel_id, row.previous_webhook_secret, None, [key])


def rotate(api: httpx.Client, key: str, channel_id: object, **body: Any) -> httpx.Response:
    return api.post(f"/v1/channels/{channel_id}/webhook-secret", headers=auth(key),
                    json=body if body else None)


def back_date(engine: Engine, channel_id: object) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE outbox.channels SET previous_webhook_secret_until = "
                          "now() - interval '1 second' WHERE id = :id"), {"id": channel_id})


def test_new_secret_works_and_the_old_one_until_its_window_ends(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str],
        make_channel: Callable[..., uuid.UUID], debug_logging: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    ch = make_channel(workspace_id="team-a")
    old = webhook_secrets(api_db)[ch]
    assert hook(api, ch, old) == 200
    before = datetime.now(UTC)
    r = rotate(api, admin("team-a"), ch, keep_old_hours=2)
    assert r.status_code == 200, r.text
    info = r.json()
    new = info["secret"]
    assert new != old and new == webhook_secrets(api_db)[ch]
    assert info["url"] == f"https://outbox.example.com/webhooks/whapi/{ch}"
    assert info["header"] == SECRET_HEADER
    assert info["whapi_settings"]["webhooks"][0]["headers"] == {SECRET_HEADER: new}
    until = datetime.fromisoformat(info["previous_secret_valid_until"])
    assert before + timedelta(hours=2) - timedelta(minutes=1) < until
    assert until < before + timedelta(hours=2, minutes=1)
    assert stored(api_db, ch).previous_webhook_secret.startswith("v2:")  # encrypted
    assert previous_secret(api_db, ch) == old

    assert hook(api, ch, new) == 200
    assert hook(api, ch, old) == 200
    assert hook(api, ch, old) == 200
    assert hook(api, ch, "not-" + new) == 401
    back_date(api_db, ch)
    assert hook(api, ch, old) == 401
    assert hook(api, ch, new) == 200

    err = capsys.readouterr().err
    assert new not in err and old not in err
    used = [json.loads(line) for line in err.splitlines()
            if "webhook_previous_secret_used" in line]
    assert len(used) == 1 and used[0]["channel_id"] == str(ch)  # once per channel and process


def test_keep_old_hours_zero_ends_the_old_secret_at_once(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str],
        make_channel: Callable[..., uuid.UUID]) -> None:
    ch = make_channel()
    old = webhook_secrets(api_db)[ch]
    r = rotate(api, admin(), ch, keep_old_hours=0)
    assert r.status_code == 200, r.text
    assert r.json()["previous_secret_valid_until"] is None
    assert hook(api, ch, old) == 401
    assert hook(api, ch, r.json()["secret"]) == 200
    row = stored(api_db, ch)
    assert row.previous_webhook_secret is None and row.previous_webhook_secret_until is None


def test_default_window_is_a_day_and_the_body_is_optional(
        api: httpx.Client, admin: Callable[..., str],
        make_channel: Callable[..., uuid.UUID]) -> None:
    ch = make_channel()
    r = api.post(f"/v1/channels/{ch}/webhook-secret", headers=auth(admin()))
    assert r.status_code == 200, r.text
    until = datetime.fromisoformat(r.json()["previous_secret_valid_until"])
    assert abs(until - datetime.now(UTC) - timedelta(hours=24)) < timedelta(minutes=1)


def test_a_second_rotation_drops_the_first_secret(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str],
        make_channel: Callable[..., uuid.UUID]) -> None:
    ch = make_channel()
    key = admin()
    first = webhook_secrets(api_db)[ch]
    second = rotate(api, key, ch).json()["secret"]
    third = rotate(api, key, ch).json()["secret"]
    assert len({first, second, third}) == 3
    assert hook(api, ch, first) == 401
    assert hook(api, ch, second) == 200
    assert hook(api, ch, third) == 200


def test_another_workspace_or_unknown_channel_is_404_and_changes_nothing(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str],
        make_channel: Callable[..., uuid.UUID]) -> None:
    ch = make_channel(workspace_id="team-a")
    before = stored(api_db, ch)
    for channel_id in (ch, uuid.uuid4()):
        r = rotate(api, admin("team-b"), channel_id, keep_old_hours=1)
        assert r.status_code == 404 and r.json()["error"]["code"] == "channel_not_found", r.text
    assert stored(api_db, ch) == before


@pytest.mark.parametrize("body", [{"keep_old_hours": -1}, {"keep_old_hours": 168.5},
                                  {"keep_old_hours": "2"}, {"keep_old_hours": True},
                                  {"keep_old_hours": 1e308}, {"keep_hours": 2}, [2]])
def test_bad_keep_old_hours_is_422_and_changes_nothing(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str],
        make_channel: Callable[..., uuid.UUID], body: Any) -> None:
    ch = make_channel()
    before = stored(api_db, ch)
    r = api.post(f"/v1/channels/{ch}/webhook-secret", headers=auth(admin()), json=body)
    assert r.status_code == 422, (body, r.text)
    assert stored(api_db, ch) == before


@pytest.mark.parametrize("keep", [timedelta(seconds=-1), timedelta(days=7, seconds=1)])
def test_library_refuses_a_window_out_of_range(
        session: Session, make_channel: Callable[..., uuid.UUID], keep: timedelta) -> None:
    from outbox.admin.webhook_secrets import rotate_webhook_secret
    from outbox.errors import InvalidInput

    ch = make_channel()
    with pytest.raises(InvalidInput) as exc:
        rotate_webhook_secret(session, ch, workspace_id="default", encryption_key=TEST_KEY,
                              keep_old_for=keep)
    assert exc.value.field == "keep_old_for"


def test_library_unknown_channel_and_other_workspace(
        session: Session, make_channel: Callable[..., uuid.UUID]) -> None:
    from outbox.admin.webhook_secrets import rotate_webhook_secret
    from outbox.errors import ChannelNotFound

    ch = make_channel(workspace_id="team-a")
    for channel_id, workspace in ((ch, "team-b"), (uuid.uuid4(), "team-a")):
        with pytest.raises(ChannelNotFound):
            rotate_webhook_secret(session, channel_id, workspace_id=workspace,
                                  encryption_key=TEST_KEY)


def test_a_secret_in_the_clear_is_rotated_and_not_kept(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str],
        make_channel: Callable[..., uuid.UUID]) -> None:
    ch = make_channel()
    store_webhook_secret(api_db, ch, "plain-old-secret", in_clear=True)
    r = rotate(api, admin(), ch, keep_old_hours=5)
    assert r.status_code == 200, r.text
    assert r.json()["previous_secret_valid_until"] is None
    row = stored(api_db, ch)
    assert row.webhook_secret.startswith("v2:") and row.previous_webhook_secret is None
    assert hook(api, ch, "plain-old-secret") == 401
    assert hook(api, ch, r.json()["secret"]) == 200


def test_a_previous_secret_planted_in_the_clear_is_refused(
        api: httpx.Client, api_db: Engine, make_channel: Callable[..., uuid.UUID]) -> None:
    ch = make_channel()
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.channels SET previous_webhook_secret = 'planted', "
                          "previous_webhook_secret_until = now() + interval '1 hour' "
                          "WHERE id = :id"), {"id": ch})
    assert hook(api, ch, "planted") == 401
    assert hook(api, ch, webhook_secrets(api_db)[ch]) == 200


def test_rotate_key_reencrypts_the_previous_secret_and_check_reads_it(
        api: httpx.Client, api_db: Engine, admin: Callable[..., str],
        make_channel: Callable[..., uuid.UUID]) -> None:
    """Out to another key and back (the server reads TEST_KEY only): the old
    secret still works after; in between, the previous secret is under the
    other key only, and `tokens check` reads it with that key."""
    other = crypto.generate_key()
    ch = make_channel()
    expired = make_channel(name="expired", phone="+15550000002")
    old = webhook_secrets(api_db)[ch]
    new = rotate(api, admin(), ch, keep_old_hours=3).json()["secret"]
    rotate(api, admin(), expired, keep_old_hours=3)
    back_date(api_db, expired)
    until = stored(api_db, ch).previous_webhook_secret_until

    out = cli("tokens", "rotate-key", env={"OUTBOX_ENCRYPTION_KEY": other,
                                           "OUTBOX_ENCRYPTION_KEY_OLD": TEST_KEY})
    assert out.returncode == 0, out.stderr
    assert previous_secret(api_db, ch, other) == old
    with pytest.raises(CryptoError):
        crypto.decrypt_token(stored(api_db, ch).previous_webhook_secret, TEST_KEY,
                             crypto.Binding(ch, None, purpose=WEBHOOK_SECRET))
    assert stored(api_db, ch).previous_webhook_secret_until == until
    gone = stored(api_db, expired)  # past its window: dropped, not re-encrypted
    assert gone.previous_webhook_secret is None and gone.previous_webhook_secret_until is None
    check = cli("tokens", "check", env={"OUTBOX_ENCRYPTION_KEY": other})
    assert check.returncode == 0, check.stdout

    back = cli("tokens", "rotate-key", env={"OUTBOX_ENCRYPTION_KEY": TEST_KEY,
                                            "OUTBOX_ENCRYPTION_KEY_OLD": other})
    assert back.returncode == 0, back.stderr
    assert hook(api, ch, old) == 200
    assert hook(api, ch, new) == 200


def test_check_names_a_previous_secret_the_current_key_cannot_read(
        api_db: Engine, make_channel: Callable[..., uuid.UUID]) -> None:
    other = crypto.generate_key()
    ch = make_channel()
    sealed = crypto.encrypt_token("old-one", other,
                                  crypto.Binding(ch, None, purpose=WEBHOOK_SECRET))
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.channels SET previous_webhook_secret = :s, "
                          "previous_webhook_secret_until = now() + interval '1 hour' "
                          "WHERE id = :id"), {"s": sealed, "id": ch})
    check = cli("tokens", "check", "--json")
    assert check.returncode == 1, check.stdout
    (row,) = json.loads(check.stdout)
    assert row["previous_webhook_secret_unreadable"] is True
    assert "previous webhook secret" in row["problem"] and "old-one" not in check.stdout


def test_cli_prints_the_new_secret_and_until_when_the_old_works(
        api: httpx.Client, api_db: Engine, make_channel: Callable[..., uuid.UUID]) -> None:
    ch = make_channel()
    old = webhook_secrets(api_db)[ch]
    out = cli("channel", "rotate-webhook-secret", str(ch), "--keep-old-hours", "1.5")
    assert out.returncode == 0, out.stderr
    new = webhook_secrets(api_db)[ch]
    assert new != old
    assert f"Header: {SECRET_HEADER}: {new}" in out.stdout and old not in out.stdout
    assert f"/webhooks/whapi/{ch}" in out.stdout
    (line,) = [x for x in out.stdout.splitlines() if "old secret still works until" in x]
    until = stored(api_db, ch).previous_webhook_secret_until
    assert until.isoformat(timespec="seconds") in line
    assert hook(api, ch, old) == 200 and hook(api, ch, new) == 200

    now = cli("channel", "rotate-webhook-secret", str(ch), "--keep-old-hours", "0", "--json")
    assert now.returncode == 0, now.stderr
    info = json.loads(now.stdout)
    assert info["secret"] == webhook_secrets(api_db)[ch]
    assert info["previous_secret_valid_until"] is None
    assert hook(api, ch, new) == 401


@pytest.mark.parametrize("args", [("--keep-old-hours", "-1"), ("--keep-old-hours", "169"),
                                  ("--keep-old-hours", "nan"), ("--keep-old-hours", "soon"),
                                  ("--workspace", "x")])
def test_cli_bad_input_is_one_line_and_changes_nothing(
        api_db: Engine, make_channel: Callable[..., uuid.UUID], args: tuple[str, ...]) -> None:
    ch = make_channel()
    before = stored(api_db, ch)
    out = cli("channel", "rotate-webhook-secret", str(ch), *args)
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert stored(api_db, ch) == before


def test_cli_unknown_channel_is_one_line(api_db: Engine) -> None:
    missing = uuid.uuid4()
    out = cli("channel", "rotate-webhook-secret", str(missing))
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == f"error: channel {missing} does not exist"
