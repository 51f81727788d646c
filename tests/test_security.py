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
from outbox.dispatcher import Summary
from outbox.errors import DecryptionFailed
from outbox.logging import _unconfigure, clear_secrets, configure_logging
from tests.conftest import TEST_KEY

BLOB = r"^[0-9a-f]{32}:[0-9a-f]{24}:[0-9a-f]{32}:[0-9a-f]+$"


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
            "SELECT channel_id, encrypted_token FROM channel_tokens")).all())
        # Every text-like column of both tables, whatever columns they grow.
        columns = conn.execute(text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name IN ('channels', 'channel_tokens') "
            "AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb')")
        ).all()
        assert {c.column_name for c in columns} >= {"encrypted_token", "key_id", "name",
                                                    "webhook_secret"}
        decrypted = {cid: crypto.decrypt_token(blob, TEST_KEY) for cid, blob in plain.items()}
        assert set(decrypted) == set(channels)
        for token in decrypted.values():
            for c in columns:
                hits = conn.execute(text(
                    f'SELECT count(*) FROM {c.table_name} '  # names from the catalog
                    f'WHERE position(:t IN "{c.column_name}"::text) > 0'), {"t": token}
                ).scalar_one()
                assert hits == 0, f"token found in {c.table_name}.{c.column_name}"
            # Nor hex-encoded (a lazy "encryption").
            hex_hits = conn.execute(text(
                "SELECT count(*) FROM channel_tokens WHERE position(:h IN encrypted_token) > 0"),
                {"h": token.encode().hex()}).scalar_one()
            assert hex_hits == 0
    for blob in plain.values():
        assert re.match(BLOB, blob)
        with pytest.raises(DecryptionFailed):
            crypto.decrypt_token(blob, TEST_KEY + "-wrong")
    # The same token twice gives different ciphertexts (fresh salt and IV).
    token = next(iter(decrypted.values()))
    assert crypto.encrypt_token(token, TEST_KEY) != crypto.encrypt_token(token, TEST_KEY)


# --- logs of a full dispatch run ---------------------------------------------------------


async def _dispatch(database_url: str) -> Summary:
    """The dispatcher as `outbox dispatch --once` builds it, with a short HTTP timeout."""
    from db.engine import make_async_engine
    from outbox.credentials import CredentialCache
    from outbox.dispatcher import Dispatcher, DispatcherConfig
    from providers.whapi import WhapiClient

    engine = make_async_engine(database_url, pool_size=4)
    client = WhapiClient(timeout=0.5, connect_attempts=2, connect_retry_wait=0.01)
    try:
        creds = CredentialCache(engine, default_base_url="http://127.0.0.1:9", keys=[TEST_KEY])
        return await Dispatcher(engine, client, creds, DispatcherConfig()).drain(max_seconds=60)
    finally:
        await client.aclose()
        await engine.dispose()


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
    assert summary.paused_channels and summary.disabled_channels
    logs = capsys.readouterr().err
    lines = [json.loads(line) for line in logs.splitlines() if line.strip()]
    events = {line["event"] for line in lines}
    # The run really logged the interesting paths (else this test proves nothing).
    assert {"claimed", "channel_rate_limited", "channel_paused", "channel_disabled"} <= events
    assert any(line["level"] == "debug" for line in lines)
    for token in tokens.values():
        assert token not in logs
    for body in bodies:
        assert body not in logs
        assert body.split()[-1] not in logs  # not even a fragment of it
    assert TEST_KEY not in logs


# --- reprs ---------------------------------------------------------------------------------


async def test_reprs_hold_no_token(make_channel, clean_db: Engine, database_url: str) -> None:
    from db.engine import make_async_engine
    from outbox.credentials import CredentialCache, Credentials
    from providers.whapi import WhapiClient

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
