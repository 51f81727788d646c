from __future__ import annotations

import base64
import hashlib
import hmac
import re
import traceback
import uuid as uuid_mod
from collections.abc import Callable

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from outbox import crypto
from outbox.crypto import decrypt_token, encrypt_token, key_id, parse_blob
from outbox.errors import (
    ConfigurationError,
    CryptoError,
    DecryptionFailed,
    InvalidInput,
    MalformedCiphertext,
    MissingEncryptionKey,
    OutboxError,
)

KEY = "correct horse battery staple"
OTHER_KEY = "correct horse battery stapler"
TOKEN = "Xq9LmT3vB7pR2sK8wN4yZ6cF1hJ5dG0a"

BLOB_RE = re.compile(r"[0-9a-f]{32}:[0-9a-f]{24}:[0-9a-f]{32}:[0-9a-f]+")


@pytest.fixture(scope="module")
def blob() -> str:
    return encrypt_token(TOKEN, KEY)


def _flip_bit(blob: str, part: int, byte: int = 0) -> str:
    parts = blob.split(":")
    raw = bytearray(bytes.fromhex(parts[part]))
    raw[byte] ^= 0x01
    parts[part] = raw.hex()
    return ":".join(parts)


def _everything_said(exc: BaseException) -> str:
    """All the text an exception can show: str, repr, the formatted traceback."""
    formatted = "".join(traceback.format_exception(exc))
    return f"{exc}\n{exc!r}\n{formatted}"


# --- round trip ----------------------------------------------------------------


def test_round_trip(blob: str) -> None:
    assert BLOB_RE.fullmatch(blob)
    assert decrypt_token(blob, KEY) == TOKEN


def test_round_trip_unicode() -> None:
    token = "tökén-🔑-ключ-鍵"
    assert decrypt_token(encrypt_token(token, "pässwörd 🔐"), "pässwörd 🔐") == token


def test_each_encryption_is_different(blob: str) -> None:
    again = encrypt_token(TOKEN, KEY)
    assert again != blob
    salt1, iv1, _, ct1 = parse_blob(blob)
    salt2, iv2, _, ct2 = parse_blob(again)
    assert salt1 != salt2
    assert iv1 != iv2
    assert ct1 != ct2
    assert decrypt_token(again, KEY) == TOKEN


def test_ciphertext_length_equals_plaintext_length(blob: str) -> None:
    # GCM is a stream mode: the tag is stored apart, nothing else is appended.
    assert len(parse_blob(blob)[3]) == len(TOKEN.encode())


def test_uppercase_hex_is_accepted(blob: str) -> None:
    assert decrypt_token(blob.upper(), KEY) == TOKEN


@pytest.mark.slow
@settings(max_examples=20, deadline=None)
@given(token=st.text(min_size=1).filter(str.strip), key=st.text(min_size=1).filter(str.strip))
def test_round_trip_property(token: str, key: str) -> None:
    blob = encrypt_token(token, key)
    assert BLOB_RE.fullmatch(blob)
    assert decrypt_token(blob, key) == token


# --- the format, independently of our code -------------------------------------


def test_interoperates_with_plain_pbkdf2_and_aesgcm(blob: str) -> None:
    # Decrypt with hashlib + AESGCM only: proves the iteration count, the key
    # size and the salt:iv:authTag:ciphertext layout.
    salt, iv, tag, ciphertext = (bytes.fromhex(p) for p in blob.split(":"))
    derived = hashlib.pbkdf2_hmac("sha256", KEY.encode(), salt, 100_000, dklen=32)
    assert AESGCM(derived).decrypt(iv, ciphertext + tag, None).decode() == TOKEN


def test_decrypts_a_blob_written_by_another_implementation() -> None:
    salt, iv = bytes(range(16)), bytes(range(100, 112))
    derived = hashlib.pbkdf2_hmac("sha256", KEY.encode(), salt, 100_000, dklen=32)
    sealed = AESGCM(derived).encrypt(iv, TOKEN.encode(), None)
    foreign = f"{salt.hex()}:{iv.hex()}:{sealed[-16:].hex()}:{sealed[:-16].hex()}"
    assert decrypt_token(foreign, KEY) == TOKEN


def test_a_different_iteration_count_does_not_decrypt(blob: str) -> None:
    salt, iv, tag, ciphertext = (bytes.fromhex(p) for p in blob.split(":"))
    derived = hashlib.pbkdf2_hmac("sha256", KEY.encode(), salt, 99_999, dklen=32)
    with pytest.raises(InvalidTag):
        AESGCM(derived).decrypt(iv, ciphertext + tag, None)


# --- wrong key, tampering ---------------------------------------------------------


def test_wrong_key(blob: str) -> None:
    with pytest.raises(DecryptionFailed) as info:
        decrypt_token(blob, OTHER_KEY)
    assert str(info.value) == (
        "could not decrypt channel token: wrong OUTBOX_ENCRYPTION_KEY or tampered data"
    )
    assert isinstance(info.value, CryptoError)


@pytest.mark.parametrize(
    ("part", "byte"),
    [(0, 0), (0, 15), (1, 0), (1, 11), (2, 0), (2, 15), (3, 0), (3, -1)],
    ids=["salt0", "salt15", "iv0", "iv11", "tag0", "tag15", "ct0", "ct-last"],
)
def test_every_part_is_authenticated(blob: str, part: int, byte: int) -> None:
    with pytest.raises(DecryptionFailed):
        decrypt_token(_flip_bit(blob, part, byte), KEY)


def test_truncated_or_extended_ciphertext_fails(blob: str) -> None:
    salt, iv, tag, ct = blob.split(":")
    with pytest.raises(DecryptionFailed):
        decrypt_token(f"{salt}:{iv}:{tag}:{ct[:-2]}", KEY)
    with pytest.raises(DecryptionFailed):
        decrypt_token(f"{salt}:{iv}:{tag}:{ct}00", KEY)


def test_swapped_tokens_parts_fail(blob: str) -> None:
    other = encrypt_token(TOKEN, KEY).split(":")
    mine = blob.split(":")
    # A valid tag from another encryption of the same token doesn't fit.
    with pytest.raises(DecryptionFailed):
        decrypt_token(":".join([mine[0], mine[1], other[2], mine[3]]), KEY)


def test_authenticated_non_utf8_plaintext_is_rejected() -> None:
    salt, iv = bytes(16), bytes(12)
    derived = hashlib.pbkdf2_hmac("sha256", KEY.encode(), salt, 100_000, dklen=32)
    sealed = AESGCM(derived).encrypt(iv, b"\xff\xfe\x00", None)
    blob = f"{salt.hex()}:{iv.hex()}:{sealed[-16:].hex()}:{sealed[:-16].hex()}"
    with pytest.raises(DecryptionFailed, match="not UTF-8"):
        decrypt_token(blob, KEY)


# --- malformed blobs ------------------------------------------------------------------

SALT, IV, TAG, CT = "00" * 16, "11" * 12, "22" * 16, "33" * 8


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "malformed channel token: empty"),
        (f"{SALT}:{IV}:{TAG}", "expected 4 parts salt:iv:authTag:ciphertext, got 3"),
        (f"{SALT}:{IV}:{TAG}:{CT}:{CT}", "expected 4 parts salt:iv:authTag:ciphertext, got 5"),
        ("not a token at all", "expected 4 parts salt:iv:authTag:ciphertext, got 1"),
        (f"{SALT}:{IV}:{TAG}:", "ciphertext is empty"),
        (f":{IV}:{TAG}:{CT}", "salt is empty"),
        (f"{SALT}::{TAG}:{CT}", "iv is empty"),
        (f"{SALT}:{IV}::{CT}", "authTag is empty"),
        (f"{SALT[:-1]}g:{IV}:{TAG}:{CT}", "salt is not hex"),
        (f"{SALT}:{IV[:-1]}z:{TAG}:{CT}", "iv is not hex"),
        (f"{SALT}:{IV}:{TAG[:-1]}-:{CT}", "authTag is not hex"),
        (f"{SALT}:{IV}:{TAG}:{CT}0", "ciphertext is not hex"),  # odd length
        (f"{SALT}:{IV}:{TAG}:33 33", "ciphertext is not hex"),  # fromhex would allow it
        (f"{SALT}:{IV}:{TAG}:{CT}\n", "ciphertext is not hex"),
        (f"{SALT}00:{IV}:{TAG}:{CT}", "salt must be 16 bytes, got 17"),
        (f"{SALT[:-2]}:{IV}:{TAG}:{CT}", "salt must be 16 bytes, got 15"),
        (f"{SALT}:{IV}00:{TAG}:{CT}", "iv must be 12 bytes, got 13"),
        (f"{SALT}:{IV}:{TAG[:-2]}:{CT}", "authTag must be 16 bytes, got 15"),
    ],
)
def test_malformed_blobs(bad: str, message: str) -> None:
    with pytest.raises(MalformedCiphertext) as info:
        parse_blob(bad)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(MalformedCiphertext):
        decrypt_token(bad, KEY)


def test_parse_blob_returns_bytes() -> None:
    salt, iv, tag, ct = parse_blob(f"{SALT}:{IV}:{TAG}:{CT}")
    assert (salt, iv, tag, ct) == (bytes(16), b"\x11" * 12, b"\x22" * 16, b"\x33" * 8)


# --- missing key, empty token -----------------------------------------------------------


@pytest.mark.parametrize("bad_key", ["", "   ", "\n"])
def test_missing_key(blob: str, bad_key: str) -> None:
    calls: list[Callable[[], object]] = [
        lambda: encrypt_token(TOKEN, bad_key),
        lambda: decrypt_token(blob, bad_key),
        lambda: key_id(bad_key),
    ]
    for call in calls:
        with pytest.raises(MissingEncryptionKey) as info:
            call()
        assert "OUTBOX_ENCRYPTION_KEY" in str(info.value)
        assert isinstance(info.value, ConfigurationError)
        assert info.value.field == "OUTBOX_ENCRYPTION_KEY"


@pytest.mark.parametrize("token", ["", " ", "\t\n"])
def test_empty_token(token: str) -> None:
    with pytest.raises(InvalidInput, match="channel token is empty") as info:
        encrypt_token(token, KEY)
    assert info.value.field == "token"


# --- key ids ---------------------------------------------------------------------------


def test_key_id_is_stable_short_hex_and_per_key() -> None:
    first = key_id(KEY)
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    crypto._key_id.cache_clear()
    assert key_id(KEY) == first
    assert key_id(OTHER_KEY) != first
    assert KEY.encode().hex()[:16] != first


def test_key_id_costs_a_full_derivation() -> None:
    # Independent recomputation: 100,000 rounds, so guessing a passphrase via
    # the stored key id is no cheaper than via an encrypted token.
    expected = hashlib.pbkdf2_hmac("sha256", KEY.encode(), b"whapi-outbox key id v1", 100_000)
    assert key_id(KEY) == expected.hex()[:16]


# --- nothing secret leaks ----------------------------------------------------------------


def test_no_secret_in_any_error(blob: str) -> None:
    errors: list[BaseException] = []
    calls: list[Callable[[], object]] = [
        lambda: decrypt_token(blob, OTHER_KEY),
        lambda: decrypt_token(_flip_bit(blob, 3), KEY),
        lambda: decrypt_token(blob[:-1], KEY),
        lambda: decrypt_token(blob + ":" + TOKEN, KEY),
        lambda: decrypt_token(TOKEN, KEY),
        lambda: encrypt_token("", KEY),
    ]
    for call in calls:
        with pytest.raises(OutboxError) as info:
            call()
        errors.append(info.value)
    for exc in errors:
        said = _everything_said(exc)
        for secret in (TOKEN, KEY, OTHER_KEY, blob.split(":")[3]):
            assert secret not in said
        assert "\n" not in str(exc)


def test_decryption_failure_does_not_chain_the_library_error(blob: str) -> None:
    with pytest.raises(DecryptionFailed) as info:
        decrypt_token(blob, OTHER_KEY)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__ is True
    assert "InvalidTag" not in "".join(traceback.format_exception(info.value))


# --- v2: a 32-byte key, bound to where the ciphertext is stored ---------------------------

STRONG = crypto.generate_key()
PLACE = crypto.Binding(uuid_mod.UUID(int=7), "https://gate.whapi.cloud")


def test_v2_round_trip_and_format() -> None:
    blob = encrypt_token(TOKEN, STRONG, PLACE)
    assert re.fullmatch(r"v2:[0-9a-f]{24}:[0-9a-f]{32}:[0-9a-f]+", blob)
    assert decrypt_token(blob, STRONG, PLACE) == TOKEN
    assert encrypt_token(TOKEN, STRONG, PLACE) != blob  # a fresh IV each time


@pytest.mark.parametrize("part", [0, 1, 2])
def test_v2_every_part_is_authenticated(part: int) -> None:
    blob = encrypt_token(TOKEN, STRONG, PLACE)
    head, rest = blob[:3], blob[3:].split(":")
    raw = bytearray(bytes.fromhex(rest[part]))
    raw[0] ^= 1
    rest[part] = raw.hex()
    with pytest.raises(DecryptionFailed):
        decrypt_token(head + ":".join(rest), STRONG, PLACE)


def test_v2_needs_its_binding_and_its_key() -> None:
    blob = encrypt_token(TOKEN, STRONG, PLACE)
    with pytest.raises(DecryptionFailed):
        decrypt_token(blob, STRONG)  # no binding
    with pytest.raises(DecryptionFailed):
        decrypt_token(blob, crypto.generate_key(), PLACE)
    with pytest.raises(DecryptionFailed):
        decrypt_token(blob, KEY, PLACE)  # a passphrase can't read v2
    with pytest.raises(ValueError):
        encrypt_token(TOKEN, STRONG)  # and nothing is written unbound


def test_keys_generate_and_strength() -> None:
    for key in (crypto.generate_key() for _ in range(5)):
        assert crypto.require_strong_key(key) == key
        assert crypto.strong_key_bytes(key) is not None
    standard = base64.b64encode(bytes(range(32))).decode()
    assert crypto.strong_key_bytes(standard) == bytes(range(32))
    assert crypto.strong_key_bytes(standard.rstrip("=")) == bytes(range(32))
    for weak in (KEY, "", base64.b64encode(bytes(31)).decode(),
                 base64.b64encode(bytes(32)).decode()):
        with pytest.raises(CryptoError) as info:
            crypto.require_strong_key(weak)
        assert isinstance(info.value, ConfigurationError)
        assert "outbox keys generate" in str(info.value)


def test_v2_key_id_is_a_keyed_hash_of_the_key() -> None:
    """Cheap (no derivation: the key is random, nothing to guess), stable,
    and different per key; a passphrase's id is still the derived one."""
    kid = key_id(STRONG)
    assert re.fullmatch(r"[0-9a-f]{16}", kid) and key_id(STRONG) == kid
    assert key_id(crypto.generate_key()) != kid
    raw = crypto.strong_key_bytes(STRONG)
    assert raw is not None
    assert kid == hmac.new(raw, b"whapi-outbox key id v2", hashlib.sha256).hexdigest()[:16]
