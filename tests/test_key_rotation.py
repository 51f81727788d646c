"""Key rotation (`outbox tokens rotate-key`, `outbox tokens check`) on real PostgreSQL.

Channels are created with the test key (conftest TEST_KEY), which plays the
old key here; NEW_KEY is the key rotated to.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox import crypto
from outbox.admin.key_rotation import check_endpoint_secrets, check_tokens, rotate_keys
from outbox.errors import ConfigurationError, DecryptionFailed, MissingEncryptionKey
from tests.dispatch_helpers import REPO, TEST_KEY, cli, store_webhook_secret
from tests.sim_fixtures import WebhookReceiver

NEW_KEY = crypto.generate_key()
STRANGER_KEY = crypto.generate_key()
# What older versions took as OUTBOX_ENCRYPTION_KEY: a passphrase.
PASSPHRASE = "an-old-passphrase-from-an-earlier-version"
# The rotation's summary line when there is no status-callback endpoint.
NO_ENDPOINTS = "; re-encrypted 0 endpoint secrets, 0 already on the current key"
ROTATE_ENV = {"OUTBOX_ENCRYPTION_KEY": NEW_KEY, "OUTBOX_ENCRYPTION_KEY_OLD": TEST_KEY}


def _tokens(engine: Engine) -> dict[uuid.UUID, tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT channel_id, encrypted_token, key_id FROM outbox.channel_tokens")).all()
    return {r.channel_id: (r.encrypted_token, r.key_id) for r in rows}


def _make_channels(make_channel, n: int) -> dict[uuid.UUID, str]:  # type: ignore[no-untyped-def]
    out = {}
    for i in range(n):
        token = f"tok{i:03d}" + uuid.uuid4().hex
        out[make_channel(name=f"c{i}", phone=f"+1555000{i:04d}", token=token)] = token
    return out


def _bound(channel_id: uuid.UUID) -> crypto.Binding:
    return crypto.Binding(channel_id, None)  # make_channel's channels have no base_url


def _plant(engine: Engine, channel_id: uuid.UUID, token: str, key: str) -> None:
    """Overwrite a channel's token with one encrypted under `key`."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE outbox.channel_tokens SET encrypted_token = :b, key_id = :k "
                          "WHERE channel_id = :id"),
                     {"b": crypto.encrypt_token(token, key, _bound(channel_id)),
                      "k": crypto.key_id(key),
                      "id": channel_id})


# --- the service function -------------------------------------------------------------


def test_rotate_reencrypts_and_is_idempotent(make_channel, clean_db: Engine) -> None:
    tokens = _make_channels(make_channel, 3)
    # One channel is already on the new key (added by a process deployed early).
    already = next(iter(tokens))
    _plant(clean_db, already, tokens[already], NEW_KEY)
    before = _tokens(clean_db)

    with Session(clean_db) as s, s.begin():
        result = rotate_keys(s, new_key=NEW_KEY, old_key=TEST_KEY)
    assert (result.reencrypted, result.already_current) == (2, 1)
    assert result.line() == "re-encrypted 2 tokens, 1 already on the current key" + NO_ENDPOINTS

    after = _tokens(clean_db)
    assert after[already] == before[already], "a row on the new key was rewritten"
    for channel_id, token in tokens.items():
        blob, kid = after[channel_id]
        assert kid == crypto.key_id(NEW_KEY)
        assert crypto.decrypt_token(blob, NEW_KEY, _bound(channel_id)) == token
        if channel_id != already:
            assert blob != before[channel_id][0]
            with pytest.raises(DecryptionFailed):
                crypto.decrypt_token(blob, TEST_KEY, _bound(channel_id))

    with Session(clean_db) as s, s.begin():
        again = rotate_keys(s, new_key=NEW_KEY, old_key=TEST_KEY)
    assert (again.reencrypted, again.already_current) == (0, 3)
    assert _tokens(clean_db) == after


def test_rotate_with_a_stale_key_id_still_reads_the_token(make_channel, clean_db: Engine) -> None:
    """key_id says 'unknown key' but the blob is under the old key: re-encrypted, not refused."""
    (channel_id, token), = _make_channels(make_channel, 1).items()
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.channel_tokens SET key_id = 'deadbeefdeadbeef'"))
    with Session(clean_db) as s, s.begin():
        assert rotate_keys(s, new_key=NEW_KEY, old_key=TEST_KEY).reencrypted == 1
    blob, kid = _tokens(clean_db)[channel_id]
    assert kid == crypto.key_id(NEW_KEY)
    assert crypto.decrypt_token(blob, NEW_KEY, _bound(channel_id)) == token


def test_undecryptable_token_aborts_everything(make_channel, clean_db: Engine) -> None:
    """The bad row comes last in the rotation's order, so the rows before it
    were already re-encrypted in the transaction when it fails: all of that
    must roll back."""
    tokens = _make_channels(make_channel, 4)
    bad = max(tokens)  # rows are processed ORDER BY channel_id
    _plant(clean_db, bad, tokens[bad], STRANGER_KEY)
    before = _tokens(clean_db)

    with pytest.raises(DecryptionFailed) as info, Session(clean_db) as s, s.begin():
        rotate_keys(s, new_key=NEW_KEY, old_key=TEST_KEY)
    message = str(info.value)
    assert str(bad) in message and "nothing was changed" in message
    assert "\n" not in message
    assert all(t not in message for t in tokens.values())
    assert NEW_KEY not in message and TEST_KEY not in message
    assert _tokens(clean_db) == before


@pytest.mark.parametrize(("new", "old", "error", "names"), [
    (NEW_KEY, None, MissingEncryptionKey, "OUTBOX_ENCRYPTION_KEY_OLD"),
    (NEW_KEY, "", MissingEncryptionKey, "OUTBOX_ENCRYPTION_KEY_OLD"),
    (None, TEST_KEY, MissingEncryptionKey, "OUTBOX_ENCRYPTION_KEY"),
    (TEST_KEY, TEST_KEY, ConfigurationError, "OUTBOX_ENCRYPTION_KEY_OLD"),
], ids=["no-old-key", "empty-old-key", "no-new-key", "same-key-twice"])
def test_rotate_refuses_bad_key_configuration(new, old, error, names, make_channel,
                                              clean_db: Engine) -> None:
    _make_channels(make_channel, 1)
    before = _tokens(clean_db)
    with pytest.raises(error) as info, Session(clean_db) as s, s.begin():
        rotate_keys(s, new_key=new, old_key=old)
    assert names in str(info.value)
    assert _tokens(clean_db) == before


def test_check_reports_per_channel(make_channel, clean_db: Engine) -> None:
    tokens = _make_channels(make_channel, 3)
    on_new, on_old, lost = sorted(tokens)
    _plant(clean_db, on_new, tokens[on_new], NEW_KEY)
    _plant(clean_db, lost, tokens[lost], STRANGER_KEY)
    with Session(clean_db) as s:
        checks = {c.channel_id: c for c in check_tokens(s, current_key=NEW_KEY,
                                                         old_key=TEST_KEY)}
    assert checks[on_new].ok and checks[on_new].key == "current"
    assert not checks[on_old].ok and checks[on_old].key == "old"
    assert "rotate-key" in (checks[on_old].problem or "")
    assert not checks[lost].ok and checks[lost].key == "unknown"


# --- the CLI ------------------------------------------------------------------------------


def test_cli_rotate_then_check(make_channel, clean_db: Engine) -> None:
    tokens = _make_channels(make_channel, 3)

    check = cli("tokens", "check", env={"OUTBOX_ENCRYPTION_KEY": NEW_KEY,
                                       "OUTBOX_ENCRYPTION_KEY_OLD": TEST_KEY})
    assert check.returncode == 1, check.stderr
    assert check.stdout.count("FAILED") == 3
    assert "0 of 3 channel tokens decrypt" in check.stdout

    first = cli("tokens", "rotate-key", env=ROTATE_ENV)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == ("re-encrypted 3 tokens, 0 already on the current key"
                                    + NO_ENDPOINTS)
    second = cli("tokens", "rotate-key", env=ROTATE_ENV)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == ("re-encrypted 0 tokens, 3 already on the current key"
                                     + NO_ENDPOINTS)

    check = cli("tokens", "check", env={"OUTBOX_ENCRYPTION_KEY": NEW_KEY})
    assert check.returncode == 0, check.stdout + check.stderr
    assert "3 of 3 channel tokens decrypt" in check.stdout
    for proc in (first, second, check):
        out = proc.stdout + proc.stderr
        assert all(t not in out for t in tokens.values())
        assert NEW_KEY not in out and TEST_KEY not in out


def test_cli_check_json(make_channel, clean_db: Engine) -> None:
    import json

    (channel_id, _), = _make_channels(make_channel, 1).items()
    proc = cli("tokens", "check", "--json")
    assert proc.returncode == 0, proc.stderr
    (entry,) = json.loads(proc.stdout)
    assert entry["channel_id"] == str(channel_id) and entry["ok"] and entry["key"] == "current"


def test_cli_missing_old_key_is_one_line(make_channel, clean_db: Engine) -> None:
    _make_channels(make_channel, 1)
    before = _tokens(clean_db)
    proc = cli("tokens", "rotate-key", env={"OUTBOX_ENCRYPTION_KEY": NEW_KEY,
                                            "OUTBOX_ENCRYPTION_KEY_OLD": ""})
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1
    assert "OUTBOX_ENCRYPTION_KEY_OLD is not set" in proc.stderr
    assert _tokens(clean_db) == before


def test_cli_undecryptable_names_channel_and_changes_nothing(make_channel,
                                                              clean_db: Engine) -> None:
    tokens = _make_channels(make_channel, 3)
    bad = max(tokens)
    _plant(clean_db, bad, tokens[bad], STRANGER_KEY)
    before = _tokens(clean_db)
    proc = cli("tokens", "rotate-key", env=ROTATE_ENV)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert str(bad) in proc.stderr
    assert all(t not in proc.stderr for t in tokens.values())
    assert _tokens(clean_db) == before


@pytest.mark.slow
def test_cli_killed_mid_rotation_changes_nothing(make_channel, clean_db: Engine,
                                                 database_url: str) -> None:
    """SIGKILL the rotation after it has written some rows (its transaction
    holds a RowExclusiveLock on channel_tokens from the first UPDATE): the
    server rolls the transaction back, every row is as before."""
    # Tokens from an older version (a passphrase): each costs a key derivation
    # (~0.05-0.1 s), so the rotation runs for seconds and we kill it midway.
    n = 40
    with clean_db.begin() as conn:
        for channel_id, token in _make_channels(make_channel, n).items():
            conn.execute(text("UPDATE outbox.channel_tokens SET encrypted_token = :b, "
                              "key_id = :k WHERE channel_id = :id"),
                         {"b": crypto.encrypt_token(token, PASSPHRASE),
                          "k": crypto.key_id(PASSPHRASE), "id": channel_id})
        # ... which kept webhook secrets in the clear.
        conn.execute(text("UPDATE outbox.channels SET webhook_secret = 'old-' || id"))
    before = _tokens(clean_db)
    proc = subprocess.Popen(
        [sys.executable, "-m", "outbox", "tokens", "rotate-key"], cwd=REPO,
        env={**os.environ, "OUTBOX_ENCRYPTION_KEY": NEW_KEY,
             "OUTBOX_ENCRYPTION_KEY_OLD": PASSPHRASE},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        writing = False
        while time.monotonic() < deadline and proc.poll() is None:
            with clean_db.connect() as conn:
                writing = conn.execute(text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks l JOIN pg_class c "
                    "ON c.oid = l.relation WHERE c.relname = 'channel_tokens' "
                    "AND l.mode = 'RowExclusiveLock' AND l.pid <> pg_backend_pid())")
                ).scalar_one()
            if writing:
                break
            time.sleep(0.02)
        assert writing, "the rotation never started writing"
        time.sleep(0.3)  # a few more rows re-encrypted inside the transaction
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # The server notices the dead client and aborts its transaction.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with clean_db.connect() as conn:
            busy = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'")).scalar_one()
        if not busy:
            break
        time.sleep(0.05)
    assert _tokens(clean_db) == before


# --- status-callback endpoints' signing secrets --------------------------------------------


def _add_endpoint(engine: Engine, url: str, key: str = TEST_KEY) -> tuple[uuid.UUID, str]:
    """An endpoint added by a process running with `key`: its id and secret."""
    from outbox.admin.endpoints import add_endpoint

    with Session(engine) as s, s.begin():
        new = add_endpoint(s, workspace_id="default", url=url, encryption_key=key)
    return new.endpoint.id, new.secret


def _endpoint_rows(engine: Engine) -> dict[uuid.UUID, tuple[str, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT id, url, encrypted_secret, key_id FROM outbox.webhook_endpoints")).all()
    return {r.id: (r.url, r.encrypted_secret, r.key_id) for r in rows}


def _plant_endpoint_secret(engine: Engine, endpoint_id: uuid.UUID, secret: str,
                           key: str) -> None:
    """Overwrite an endpoint's secret with one encrypted under `key`."""
    from outbox.events.callbacks import secret_binding

    url = _endpoint_rows(engine)[endpoint_id][0]
    with engine.begin() as conn:
        conn.execute(text("UPDATE outbox.webhook_endpoints SET encrypted_secret = :b, "
                          "key_id = :k WHERE id = :id"),
                     {"b": crypto.encrypt_token(secret, key, secret_binding(endpoint_id, url)),
                      "k": crypto.key_id(key), "id": endpoint_id})


async def test_endpoints_added_before_the_rotation_still_sign_with_only_the_new_key(
        make_channel, clean_db: Engine, database_url: str, receiver: WebhookReceiver) -> None:
    """Endpoint secrets under the old key (a disabled endpoint's too) are
    re-encrypted with the tokens; one added by a process already on the new
    key is left alone. After the old key is dropped, a callback sender with
    the new key only signs with the same secrets the receivers hold."""
    import standardwebhooks

    from outbox import enqueue_text
    from outbox.database import make_async_engine
    from outbox.events.callbacks import CallbackSender, decrypt_secret

    channel_id = make_channel()
    old_a, secret_a = _add_endpoint(clean_db, receiver.url + "/a")
    disabled, secret_d = _add_endpoint(clean_db, receiver.url + "/disabled")
    early, secret_e = _add_endpoint(clean_db, receiver.url + "/early", key=NEW_KEY)
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.webhook_endpoints SET status = 'disabled', "
                          "disabled_reason = 'the receiver answered 410 Gone' WHERE id = :id"),
                     {"id": disabled})
    secrets = {old_a: secret_a, disabled: secret_d, early: secret_e}
    before = _endpoint_rows(clean_db)

    with Session(clean_db) as s, s.begin():
        result = rotate_keys(s, new_key=NEW_KEY, old_key=TEST_KEY)
    assert (result.endpoints_reencrypted, result.endpoints_already_current) == (2, 1)
    assert result.line().endswith("; re-encrypted 2 endpoint secrets, 1 already on the "
                                  "current key")
    after = _endpoint_rows(clean_db)
    assert after[early] == before[early], "an endpoint on the new key was rewritten"
    for endpoint_id, secret in secrets.items():
        url, blob, kid = after[endpoint_id]
        assert kid == crypto.key_id(NEW_KEY)
        assert decrypt_secret(endpoint_id, url, blob, [NEW_KEY]) == secret
        if endpoint_id != early:
            with pytest.raises(DecryptionFailed):
                decrypt_secret(endpoint_id, url, blob, [TEST_KEY])
    with Session(clean_db) as s, s.begin():
        again = rotate_keys(s, new_key=NEW_KEY, old_key=TEST_KEY)
    assert (again.endpoints_reencrypted, again.endpoints_already_current) == (0, 3)
    assert _endpoint_rows(clean_db) == after
    with Session(clean_db) as s:
        assert [(c.ok, c.key) for c in check_endpoint_secrets(s, current_key=NEW_KEY)] == [
            (True, "current")] * 3

    # The old key dropped: one real pass of the sender, with the new key only.
    with Session(clean_db) as s, s.begin():
        enqueue_text(s, channel_id=channel_id, to="+15550100001", body="after the rotation")
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.webhook_fanout SET last_event_id = 0"))
    engine = make_async_engine(database_url, pool_size=2)
    sender = CallbackSender(keys=[NEW_KEY])
    try:
        summary = await sender.run_once(engine)
    finally:
        await sender.aclose()
        await engine.dispose()
    assert summary.delivered == 2 and summary.failed == 0, summary
    by_path = {r.path: r for r in receiver.wait_for(2)}
    assert set(by_path) == {"/a", "/early"}  # the disabled endpoint is sent nothing
    for path, secret in (("/a", secret_a), ("/early", secret_e)):
        r = by_path[path]
        payload = standardwebhooks.Webhook(secret).verify(r.raw, {
            k: r.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")})
        assert payload["type"] == "message.queued"


def test_undecryptable_endpoint_secret_aborts_everything(
        make_channel, clean_db: Engine, receiver: WebhookReceiver) -> None:
    """Endpoints come last: by the time the bad one is read, every token and
    the endpoint before it were re-encrypted in the transaction; all of that
    rolls back, through the service and through the CLI."""
    tokens = _make_channels(make_channel, 2)
    endpoints = dict(_add_endpoint(clean_db, f"{receiver.url}/{i}") for i in range(3))
    bad = max(endpoints)  # rows are processed ORDER BY id
    _plant_endpoint_secret(clean_db, bad, endpoints[bad], STRANGER_KEY)
    before = (_tokens(clean_db), _endpoint_rows(clean_db))

    with pytest.raises(DecryptionFailed) as info, Session(clean_db) as s, s.begin():
        rotate_keys(s, new_key=NEW_KEY, old_key=TEST_KEY)
    message = str(info.value)
    assert f"webhook endpoint {bad}" in message and "nothing was changed" in message
    assert "\n" not in message
    secrets = [*tokens.values(), *endpoints.values(), NEW_KEY, TEST_KEY, STRANGER_KEY]
    assert all(x not in message for x in secrets)
    assert (_tokens(clean_db), _endpoint_rows(clean_db)) == before

    proc = cli("tokens", "rotate-key", env=ROTATE_ENV)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [proc.stderr.strip()]
    assert str(bad) in proc.stderr
    assert all(x not in proc.stderr for x in secrets)
    assert (_tokens(clean_db), _endpoint_rows(clean_db)) == before


def test_cli_check_names_endpoints_whose_secret_does_not_decrypt(
        make_channel, clean_db: Engine, receiver: WebhookReceiver) -> None:
    import json

    _make_channels(make_channel, 1)
    fine, _ = _add_endpoint(clean_db, receiver.url + "/fine")
    lost, lost_secret = _add_endpoint(clean_db, receiver.url + "/lost")
    _plant_endpoint_secret(clean_db, lost, lost_secret, STRANGER_KEY)

    check = cli("tokens", "check")  # OUTBOX_ENCRYPTION_KEY is TEST_KEY, the endpoints' key
    assert check.returncode == 1, check.stdout + check.stderr
    (lost_line,) = [line for line in check.stdout.splitlines() if str(lost) in line]
    assert "FAILED" in lost_line and "unknown" in lost_line
    (fine_line,) = [line for line in check.stdout.splitlines() if str(fine) in line]
    assert "FAILED" not in fine_line and "current" in fine_line
    assert "1 of 1 channel tokens decrypt" in check.stdout
    assert "1 of 2 endpoint signing secrets decrypt" in check.stdout
    assert lost_secret not in check.stdout + check.stderr

    entries = json.loads(cli("tokens", "check", "--json").stdout)
    by_endpoint = {e["endpoint_id"]: e for e in entries if "endpoint_id" in e}
    assert [e["ok"] for e in entries if "channel_id" in e] == [True]
    assert by_endpoint[str(fine)]["ok"] and by_endpoint[str(fine)]["key"] == "current"
    assert not by_endpoint[str(lost)]["ok"] and by_endpoint[str(lost)]["key"] == "unknown"
    assert by_endpoint[str(lost)]["url"] == receiver.url + "/lost"

    # Between the deploy and the rotation: the old key reads it, the check says what to run.
    _plant_endpoint_secret(clean_db, lost, lost_secret, TEST_KEY)
    check = cli("tokens", "check", "--json", env={"OUTBOX_ENCRYPTION_KEY": NEW_KEY,
                                                  "OUTBOX_ENCRYPTION_KEY_OLD": TEST_KEY})
    assert check.returncode == 1
    by_endpoint = {e["endpoint_id"]: e for e in json.loads(check.stdout) if "endpoint_id" in e}
    assert [by_endpoint[str(e)]["key"] for e in (fine, lost)] == ["old", "old"]
    assert "outbox tokens rotate-key" in by_endpoint[str(lost)]["problem"]


# --- rolling deploy ---------------------------------------------------------------------


async def test_credential_cache_reads_both_keys_during_rolling_deploy(
        make_channel, clean_db: Engine, database_url: str) -> None:
    """Dispatchers run with keys=[new, old] while tokens are on either key."""
    from outbox.database import make_async_engine
    from outbox.dispatch.credentials import CredentialCache, Credentials, Unusable

    tokens = _make_channels(make_channel, 2)
    on_new, on_old = sorted(tokens)
    _plant(clean_db, on_new, tokens[on_new], NEW_KEY)

    engine = make_async_engine(database_url, pool_size=2)
    try:
        both = CredentialCache(engine, default_base_url="http://127.0.0.1:9",
                               keys=[NEW_KEY, TEST_KEY])
        got = await both.get_many([on_new, on_old])
        assert all(isinstance(c, Credentials) for c in got.values())
        assert {c: got[c].token for c in got} == tokens  # type: ignore[union-attr]

        # A dispatcher that only knows the new key can't read the old row...
        only_new = CredentialCache(engine, default_base_url="http://127.0.0.1:9",
                                   keys=[NEW_KEY])
        got = await only_new.get_many([on_new, on_old])
        assert isinstance(got[on_new], Credentials) and isinstance(got[on_old], Unusable)

        # ...until the rotation ran; both caches then read everything (a new
        # ciphertext is a new cache entry).
        with Session(clean_db) as s, s.begin():
            rotate_keys(s, new_key=NEW_KEY, old_key=TEST_KEY)
        for cache in (both, only_new):
            cache.forget(on_new)
            cache.forget(on_old)
            got = await cache.get_many([on_new, on_old])
            assert {c: got[c].token for c in got} == tokens  # type: ignore[union-attr]
    finally:
        await engine.dispose()


# --- from an older version's passphrase to a key ----------------------------------------


def test_an_older_installation_moves_from_its_passphrase_to_a_key(
        make_channel, clean_db: Engine, sim, sim_url: str) -> None:
    """Tokens written by older versions (a passphrase, no binding) and webhook
    secrets kept in the clear are still read; rotate-key rewrites both bound
    to their channel, and the dispatcher sends with what it wrote."""
    import asyncio

    from outbox import enqueue_text
    from outbox.admin.channels import WEBHOOK_SECRET, webhook_secret_of
    from tests.dispatch_helpers import run_dispatcher

    channel_id = make_channel(base_url=sim_url, token="legacy-token-0001")
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.channel_tokens SET encrypted_token = :b, key_id = :k"),
                     {"b": crypto.encrypt_token("legacy-token-0001", PASSPHRASE),
                      "k": crypto.key_id(PASSPHRASE)})
        conn.execute(text("UPDATE outbox.channels SET webhook_secret = 'plain-old-secret'"))
    with Session(clean_db) as s, s.begin():
        checks = check_tokens(s, current_key=NEW_KEY, old_key=PASSPHRASE)
    assert [c.ok for c in checks] == [False] and "rotate-key" in checks[0].problem
    proc = cli("tokens", "rotate-key", env={"OUTBOX_ENCRYPTION_KEY": NEW_KEY,
                                            "OUTBOX_ENCRYPTION_KEY_OLD": PASSPHRASE})
    assert proc.returncode == 0, proc.stderr
    with clean_db.connect() as conn:
        row = conn.execute(text(
            "SELECT t.encrypted_token, t.key_id, c.webhook_secret FROM outbox.channel_tokens t "
            "JOIN outbox.channels c ON c.id = t.channel_id")).one()
    assert row.encrypted_token.startswith("v2:") and row.key_id == crypto.key_id(NEW_KEY)
    assert row.webhook_secret.startswith("v2:") and "plain-old-secret" not in row.webhook_secret
    assert webhook_secret_of(channel_id, row.webhook_secret, sim_url, [NEW_KEY]) == (
        "plain-old-secret")
    with pytest.raises(DecryptionFailed):  # bound: not readable as another purpose
        crypto.decrypt_token(row.webhook_secret, NEW_KEY,
                             crypto.Binding(channel_id, sim_url, purpose="token"))
    assert WEBHOOK_SECRET != "token"
    with Session(clean_db) as s, s.begin():
        enqueue_text(s, channel_id=channel_id, to="+15550100001", body="after the move")
    sim.register_channel("legacy-token-0001")
    summary = asyncio.run(run_dispatcher(_url(clean_db), keys=[NEW_KEY]))
    assert summary.sent == 1 and [r.body for r in sim.sent()] == ["after the move"]


def test_a_secret_left_in_the_clear_is_refused_until_rotate_key_encrypts_it(
        api: httpx.Client, make_channel, api_db: Engine) -> None:
    """An installation from before 0.2 (passphrase token, webhook secret in
    the clear) upgraded with the default settings: its webhooks are refused,
    `outbox status` and `outbox tokens check` name the channel; after
    rotate-key the same secret works, and neither reports anything."""
    import json

    from outbox.webhooks.apply import SECRET_HEADER
    from tests.api_fixtures import row_counts

    channel_id = make_channel(token="legacy-token-0002")
    fine = make_channel(name="fine", phone="+15550000002")
    old_secret = "old-secret-" + uuid.uuid4().hex
    with api_db.begin() as conn:
        conn.execute(text("UPDATE outbox.channel_tokens SET encrypted_token = :b, key_id = :k "
                          "WHERE channel_id = :id"),
                     {"b": crypto.encrypt_token("legacy-token-0002", PASSPHRASE),
                      "k": crypto.key_id(PASSPHRASE), "id": channel_id})
    store_webhook_secret(api_db, channel_id, old_secret, in_clear=True)
    body = {"messages": [{"id": "wa-in-1", "from_me": False, "type": "text",
                          "chat_id": "15550100009@s.whatsapp.net", "timestamp": 1712995245,
                          "text": {"body": "hi"}, "from": "15550100009"}],
            "event": {"type": "messages", "event": "post"}}

    def hook() -> httpx.Response:
        return api.post(f"/webhooks/whapi/{channel_id}", json=body,
                        headers={SECRET_HEADER: old_secret})

    before = row_counts(api_db)
    assert hook().status_code == 401
    assert row_counts(api_db) == before

    status = cli("status")
    assert status.returncode == 0, status.stderr
    (warning,) = [w for w in status.stdout.splitlines() if "in the clear" in w]
    assert str(channel_id) in warning and str(fine) not in warning
    assert "outbox tokens rotate-key" in warning and old_secret not in status.stdout
    assert any(str(channel_id) in w and "passphrase" in w for w in status.stdout.splitlines())
    channels = {c["id"]: c for c in json.loads(cli("status", "--json").stdout)["channels"]}
    assert channels[str(channel_id)]["webhook_secret_in_clear"] is True
    assert channels[str(channel_id)]["token_from_passphrase"] is True
    assert channels[str(fine)]["webhook_secret_in_clear"] is False
    assert channels[str(fine)]["token_from_passphrase"] is False
    check = cli("tokens", "check", "--json", env={"OUTBOX_ENCRYPTION_KEY_OLD": PASSPHRASE})
    assert check.returncode == 1
    assert {c["channel_id"]: c["webhook_secret_in_clear"] for c in json.loads(check.stdout)} == {
        str(channel_id): True, str(fine): False}

    # The upgrade: the key the server runs with is the new one, the passphrase the old.
    rotate = cli("tokens", "rotate-key", env={"OUTBOX_ENCRYPTION_KEY": TEST_KEY,
                                              "OUTBOX_ENCRYPTION_KEY_OLD": PASSPHRASE})
    assert rotate.returncode == 0, rotate.stderr
    r = hook()
    assert r.status_code == 200, r.text
    assert r.json()["messages"]["inserted"] == 1
    status = cli("status")
    assert "in the clear" not in status.stdout and "passphrase" not in status.stdout
    check = cli("tokens", "check")
    assert check.returncode == 0, check.stdout
    assert "in the clear" not in check.stdout


def test_rotate_key_encrypts_the_secret_of_a_channel_without_a_token(
        make_channel, clean_db: Engine) -> None:
    from outbox.admin.channels import WEBHOOK_SECRET, stored_in_clear

    channel_id = make_channel()
    store_webhook_secret(clean_db, channel_id, "tokenless-secret", in_clear=True)
    with clean_db.begin() as conn:
        conn.execute(text("DELETE FROM outbox.channel_tokens"))
    with Session(clean_db) as s, s.begin():
        rotate_keys(s, new_key=NEW_KEY, old_key=TEST_KEY)
    with clean_db.connect() as conn:
        stored = conn.execute(text("SELECT webhook_secret FROM outbox.channels")).scalar_one()
    assert not stored_in_clear(stored)
    assert crypto.decrypt_token(stored, NEW_KEY, crypto.Binding(
        channel_id, None, purpose=WEBHOOK_SECRET)) == "tokenless-secret"


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_a_token_copied_to_another_channel_or_base_url_does_not_decrypt(
        make_channel, clean_db: Engine) -> None:
    a = make_channel(name="a", token="token-of-a")
    b = make_channel(name="b", phone="+15550000002", token="token-of-b")
    tokens = _tokens(clean_db)
    blob_a = tokens[a][0]
    assert crypto.decrypt_token(blob_a, TEST_KEY, crypto.Binding(a, None)) == "token-of-a"
    for wrong in (crypto.Binding(b, None), crypto.Binding(a, "https://attacker.example"),
                  crypto.Binding(a, None, purpose="webhook-secret")):
        with pytest.raises(DecryptionFailed):
            crypto.decrypt_token(blob_a, TEST_KEY, wrong)
    # Copied in the database: the dispatcher refuses it rather than sending b's messages
    # with a's token.
    with clean_db.begin() as conn:
        conn.execute(text("UPDATE outbox.channel_tokens SET encrypted_token = :blob "
                          "WHERE channel_id = :b"), {"blob": blob_a, "b": b})
    with Session(clean_db) as s, s.begin():
        checks = {c.channel_id: c for c in check_tokens(s, current_key=TEST_KEY)}
    assert checks[a].ok and not checks[b].ok
