"""Security checks as tests: secrets and message content stay where they belong.

Sections: tokens at rest; logs of a full dispatch run; reprs.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox import crypto
from outbox.dispatch.dispatcher import Summary
from outbox.errors import DecryptionFailed
from outbox.logging import _unconfigure, clear_secrets, configure_logging
from tests.conftest import TEST_KEY

BLOB = r"^v2:[0-9a-f]{24}:[0-9a-f]{32}:[0-9a-f]+$"  # iv:authTag:ciphertext, hex


@pytest.fixture
def debug_logging() -> Iterator[None]:
    """outbox.logging at DEBUG, JSON lines, to sys.stderr (which capsys captures:
    the handler looks sys.stderr up on every write)."""
    root = logging.getLogger()
    level = root.level
    configure_logging(level="DEBUG", json=True)
    try:
        yield
    finally:
        _unconfigure()
        clear_secrets()
        root.setLevel(level)


# --- tokens at rest ---------------------------------------------------------------------


def test_tokens_are_only_ciphertext_in_the_database(make_channel, clean_db: Engine) -> None:
    channels = [make_channel(name=f"c{i}", phone=f"+1555000000{i}",
                             token=secrets.token_hex(16)) for i in range(3)]
    with clean_db.connect() as conn:
        plain: dict[uuid.UUID, str] = dict(conn.execute(text(
            "SELECT channel_id, encrypted_token FROM outbox.channel_tokens")).all())
        # Every text-like column of both tables, whatever columns they grow.
        columns = conn.execute(text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'outbox' AND table_name IN ('channels', 'channel_tokens') "
            "AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')")
        ).all()
        assert {c.column_name for c in columns} >= {"encrypted_token", "key_id", "name",
                                                    "webhook_secret"}
        decrypted = {cid: crypto.decrypt_token(blob, TEST_KEY, crypto.Binding(cid, None))
                     for cid, blob in plain.items()}
        assert set(decrypted) == set(channels)
        for token in decrypted.values():
            for c in columns:
                hits = conn.execute(text(
                    f'SELECT count(*) FROM outbox.{c.table_name} '  # names from the catalog
                    f'WHERE position(:t IN "{c.column_name}"::text) > 0'), {"t": token}
                ).scalar_one()
                assert hits == 0, f"token found in {c.table_name}.{c.column_name}"
            # Nor hex-encoded (a lazy "encryption").
            hex_hits = conn.execute(text(
                "SELECT count(*) FROM outbox.channel_tokens "
                "WHERE position(:h IN encrypted_token) > 0"),
                {"h": token.encode().hex()}).scalar_one()
            assert hex_hits == 0
    for cid, blob in plain.items():
        assert re.match(BLOB, blob)
        with pytest.raises(DecryptionFailed):
            crypto.decrypt_token(blob, crypto.generate_key(), crypto.Binding(cid, None))
    # The same token twice gives different ciphertexts (a fresh IV).
    cid, token = next(iter(decrypted.items()))
    bound = crypto.Binding(cid, None)
    assert crypto.encrypt_token(token, TEST_KEY, bound) != crypto.encrypt_token(token, TEST_KEY,
                                                                              bound)


# --- logs of a full dispatch run ---------------------------------------------------------


async def _dispatch(database_url: str) -> Summary:
    """The dispatcher as `outbox dispatch --once` builds it, with a short HTTP timeout."""
    from outbox.database import make_async_engine
    from outbox.dispatch.credentials import CredentialCache
    from outbox.dispatch.dispatcher import Dispatcher, DispatcherConfig
    from outbox.providers.whapi import WhapiClient

    engine = make_async_engine(database_url, pool_size=4)
    client = WhapiClient(timeout=0.5, connect_attempts=2, connect_retry_wait=0.01)
    try:
        creds = CredentialCache(engine, default_base_url="http://127.0.0.1:9", keys=[TEST_KEY])
        async with Dispatcher(engine, client, creds, DispatcherConfig()) as dispatcher:
            return await dispatcher.drain(max_seconds=60)
    finally:
        await client.aclose()
        await engine.dispose()


@pytest.mark.slow
async def test_dispatch_logs_hold_no_token_and_no_body(
        make_channel, clean_db: Engine, database_url: str, sim, sim_url,
        debug_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    """A run through every path that logs: sends, retries (503), a timeout,
    a 429 pause, a 401 pause, a 404 disable and a permanent 400."""
    from outbox.enqueue import enqueue_many
    from outbox.message_types import TextMessage

    tokens = {name: secrets.token_hex(16) for name in ("ok", "limited", "logged_out", "gone")}
    channels = {name: make_channel(name=name, phone=f"+1555000001{i}", token=tok,
                                   base_url=sim_url)
                for i, (name, tok) in enumerate(tokens.items())}
    bodies = []
    plan = []
    for name, channel in channels.items():
        for n in range(6):
            body = f"private body {name} {n} {uuid.uuid4().hex}"
            bodies.append(body)
            plan.append(TextMessage(channel, f"+1555020{n:04d}", body))
    with Session(clean_db) as s, s.begin():
        enqueue_many(s, plan)
    sim.set_faults(to="15550200001@s.whatsapp.net", error_status=503)
    sim.set_faults(to="15550200002@s.whatsapp.net", error_status=400)
    sim.set_faults(to="15550200003@s.whatsapp.net", hang=True)
    sim.set_faults(token=tokens["limited"], error_status=429)
    sim.set_faults(token=tokens["logged_out"], error_status=401)
    sim.set_faults(token=tokens["gone"], error_status=404)

    summary = await _dispatch(database_url)

    assert summary.sent >= 3 and summary.retried >= 2 and summary.failed >= 1
    assert len(summary.paused_channels) == 3
    logs = capsys.readouterr().err
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
    events = {line["event"] for line in lines}
    # The run really logged the interesting paths (else this test proves nothing).
    assert {"claimed", "channel_rate_limited", "channel_paused"} <= events
    assert any(line["level"] == "debug" for line in lines)
    for token in tokens.values():
        assert token not in logs
    for body in bodies:
        assert body not in logs
        assert body.split()[-1] not in logs  # not even a fragment of it
    assert TEST_KEY not in logs


# --- reprs ---------------------------------------------------------------------------------


async def test_reprs_hold_no_token(make_channel, clean_db: Engine, database_url: str) -> None:
    from outbox.database import make_async_engine
    from outbox.dispatch.credentials import CredentialCache, Credentials
    from outbox.providers.whapi import WhapiClient

    token = secrets.token_hex(16)
    channel = make_channel(token=token)
    engine = make_async_engine(database_url, pool_size=1)
    client = WhapiClient(timeout=1.0)
    try:
        cache = CredentialCache(engine, default_base_url="http://127.0.0.1:9", keys=[TEST_KEY])
        creds = (await cache.get_many([channel]))[channel]
        assert isinstance(creds, Credentials) and creds.token == token
        for obj in (creds, cache, client):
            for shown in (repr(obj), str(obj), f"{obj!r:>10}", repr([obj]), repr({"x": obj})):
                assert token not in shown, type(obj).__name__
                assert TEST_KEY not in shown
        assert str(channel) in repr(creds)  # the repr still says which channel
    finally:
        await client.aclose()
        await engine.dispose()


# --- constant-time comparisons, API keys at rest ---------------------------------------------
#
# The checks that compare a presented credential with the stored one must use
# hmac.compare_digest (secrets.compare_digest is the same function): statically
# (no ==/!= between two non-constant values in those functions), and at run time
# on every auth path through the real HTTP server (hmac.compare_digest is wrapped
# by a recorder while the requests run).


def _secret_checks() -> dict[str, object]:
    from outbox.admin.apikeys import authenticate
    from outbox.api.auth import require_cron_secret
    from outbox.webhooks.apply import check_webhook_secret, secret_matches

    return {"authenticate": authenticate, "secret_matches": secret_matches,
            "check_webhook_secret": check_webhook_secret,
            "require_cron_secret": require_cron_secret}


def test_secret_checks_have_no_plain_equality() -> None:
    import ast
    import inspect
    import itertools
    import textwrap

    uses_compare_digest = set()
    for name, func in _secret_checks().items():
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))  # type: ignore[arg-type]
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                for op, (left, right) in zip(node.ops, itertools.pairwise(operands),
                                             strict=True):
                    if isinstance(op, ast.Eq | ast.NotEq | ast.In | ast.NotIn):
                        assert isinstance(left, ast.Constant) or isinstance(
                            right, ast.Constant), f"{name}: {ast.unparse(node)}"
            if isinstance(node, ast.Attribute) and node.attr == "compare_digest":
                uses_compare_digest.add(name)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "secret_matches":
                uses_compare_digest.add(name)  # delegates to the checked helper
    assert uses_compare_digest == set(_secret_checks())


@pytest.fixture
def compare_digest_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    import hmac
    import threading

    calls: list[tuple[bytes, bytes]] = []
    lock = threading.Lock()
    real = hmac.compare_digest

    def recording(a, b):  # type: ignore[no-untyped-def]
        with lock:
            calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    return calls


def test_every_auth_path_compares_in_constant_time(live_url: str, api_db: Engine, api_key,
                                                   make_channel, compare_digest_calls) -> None:
    import hashlib

    import httpx

    from outbox.webhooks.apply import SECRET_HEADER
    from tests.api_fixtures import CRON_SECRET, webhook_secret

    key = api_key("ct")
    prefix = key.split("_")[1]
    ch = make_channel(workspace_id="ct")
    secret = webhook_secret(api_db, ch)
    stored_hash = hashlib.sha256(key.encode()).hexdigest().encode()
    from outbox.admin.apikeys import _DUMMY_HASH

    cases = [
        # (what, request, expected status, the stored side that must be compared)
        ("valid key", ("GET", "/v1/chats", {"Authorization": f"Bearer {key}"}), 200,
         stored_hash),
        ("right prefix, wrong secret",
         ("GET", "/v1/chats", {"Authorization": f"Bearer wo_{prefix}_{'A' * 43}"}), 401,
         stored_hash),
        ("unknown prefix", ("GET", "/v1/chats", {"Authorization": f"Bearer wo_{'0' * 12}_x"}),
         401, _DUMMY_HASH.encode()),
        ("not a key at all", ("GET", "/v1/chats", {"Authorization": "Bearer nonsense"}), 401,
         _DUMMY_HASH.encode()),
        ("webhook, right secret", ("POST", f"/webhooks/whapi/{ch}", {SECRET_HEADER: secret}),
         200, secret.encode()),
        ("webhook, wrong secret", ("POST", f"/webhooks/whapi/{ch}",
                                   {SECRET_HEADER: secret[:-1] + "x"}), 401, secret.encode()),
        ("cron, wrong secret", ("POST", "/v1/cron/dispatch",
                                {"Authorization": f"Bearer {CRON_SECRET}x"}), 401,
         CRON_SECRET.encode()),
    ]
    with httpx.Client(base_url=live_url, timeout=30, trust_env=False) as client:
        for what, (method, path, headers), status, stored in cases:
            compare_digest_calls.clear()
            kwargs = {"json": {"statuses": []}} if "webhooks" in path else {}
            r = client.request(method, path, headers=headers, **kwargs)
            assert r.status_code == status, (what, r.text)
            assert any(stored in (a, b) for a, b in compare_digest_calls), (
                what, "no constant-time comparison against the stored value")
            for a, b in compare_digest_calls:
                assert isinstance(a, bytes) and isinstance(b, bytes), what


def test_api_keys_are_stored_only_as_a_hash_anywhere(api_db: Engine, api_key) -> None:
    """The whole key, its secret part and encodings of it appear nowhere in
    the database (every text and json column of every table); the row holds
    the SHA-256 of the key, which is not the key."""
    import base64
    import hashlib

    keys = [api_key(f"ws-{n}") for n in range(3)]
    with api_db.connect() as conn:
        columns = conn.execute(text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'outbox' AND data_type IN "
            "('text', 'character varying', 'character', 'json', 'jsonb', 'bytea')")).all()
        assert ("api_keys", "key_hash") in {(c.table_name, c.column_name) for c in columns}
        for key in keys:
            secret_part = key.split("_", 2)[2]
            needles = [key, secret_part, secret_part.encode().hex(),
                       base64.b64encode(secret_part.encode()).decode().rstrip("=")]
            for c in columns:
                for needle in needles:
                    hits = conn.execute(text(
                        f'SELECT count(*) FROM outbox."{c.table_name}" '  # names from the catalog
                        f'WHERE position(:n IN "{c.column_name}"::text) > 0'), {"n": needle}
                    ).scalar_one()
                    assert hits == 0, f"API key material in {c.table_name}.{c.column_name}"
            row = conn.execute(text("SELECT prefix, key_hash FROM outbox.api_keys "
                                    "WHERE prefix = :p"),
                               {"p": key.split("_")[1]}).one()
            assert row.key_hash == hashlib.sha256(key.encode()).hexdigest()
            assert re.fullmatch(r"[0-9a-f]{64}", row.key_hash)


def test_credentials_stay_out_of_logs_even_on_a_500(
        live_url: str, api_db: Engine, api_key, make_channel, debug_logging: None,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error inside an authenticated request is logged with its
    traceback: neither the API key, nor the webhook secret, nor the body may
    be in it (structlog's default renderer would print every frame's locals,
    the request headers among them; outbox.logging must not)."""
    import httpx

    from outbox.api import messages as messages_route
    from outbox.webhooks.apply import SECRET_HEADER
    from tests.api_fixtures import webhook_secret

    key = api_key()
    ch = make_channel()
    secret = webhook_secret(api_db, ch)
    body_text = f"private body {uuid.uuid4().hex}"

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("unexpected failure")

    monkeypatch.setattr(messages_route, "enqueue", boom)
    with httpx.Client(base_url=live_url, timeout=30, trust_env=False) as client:
        r = client.post("/v1/messages", headers={"Authorization": f"Bearer {key}"},
                        json={"channel_id": str(ch), "to": "+15550100001", "text": body_text})
        assert r.status_code == 500
        assert r.json() == {"error": {"code": "internal_error", "message": "internal error"}}
    # (uvicorn drops the connection after an unhandled exception: a new one.)
    with httpx.Client(base_url=live_url, timeout=30, trust_env=False) as client:
        r = client.post(f"/webhooks/whapi/{ch}", headers={SECRET_HEADER: secret[:-1] + "x"},
                        json={"statuses": []})
        assert r.status_code == 401
        import time

        time.sleep(0.3)  # the server thread finishes its logging
    logs = capsys.readouterr().err
    assert "unhandled_error" in logs and "RuntimeError" in logs  # the 500 was logged
    for needle in (key, key.split("_", 2)[2], secret, secret[:-1], body_text):
        assert needle not in logs
