"""Encryption of channel tokens and webhook secrets at rest.

The key (OUTBOX_ENCRYPTION_KEY) is 32 random bytes, written in base64
(`outbox keys generate` prints one). What it encrypts is written as::

    v2:iv:authTag:ciphertext        each part hex

AES-256-GCM with the key itself, a random 12-byte IV, and associated data
that binds the ciphertext to where it is stored: what it is (a token or a
webhook secret), the channel's id, the key's id and the channel's base URL.
A database writer who copies one channel's ciphertext onto another channel,
or points a channel's base_url at a host of theirs, gets a decryption
failure, not the token.

Older installations (and the seeds) wrote tokens with a passphrase::

    salt:iv:authTag:ciphertext      each part hex

PBKDF2-HMAC-SHA256(passphrase, salt, 100,000 iterations) -> the AES key, no
associated data. Those are still read (with the passphrase in
OUTBOX_ENCRYPTION_KEY_OLD), and `outbox tokens rotate-key` rewrites them in
the new form; nothing new is written that way.

Nothing here ever puts a token, a passphrase or a plaintext into an exception
message; exceptions from `cryptography` are replaced (``from None``) rather
than chained.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import uuid
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from outbox.errors import (
    DecryptionFailed,
    InvalidInput,
    MalformedCiphertext,
    MissingEncryptionKey,
    WeakEncryptionKey,
)

ENCRYPTION_KEY_ENV = "OUTBOX_ENCRYPTION_KEY"

PBKDF2_ITERATIONS = 100_000
KEY_BYTES = 32  # AES-256
SALT_BYTES = 16
IV_BYTES = 12  # the GCM standard nonce size
TAG_BYTES = 16
KEY_ID_HEX_CHARS = 16

# Key ids go through the same PBKDF2 as the tokens: a key id is stored in
# the clear beside every token, and a single HMAC would let someone with the
# database test passphrase guesses 100,000 times faster than via the tokens.
_KEY_ID_SALT = b"whapi-outbox key id v1"

# Lowercase is what we write; uppercase is accepted on read (hex is hex).
# Checked by regex first because bytes.fromhex() also accepts whitespace.
_HEX = re.compile(r"[0-9a-fA-F]+")

_DECRYPTION_FAILED = "could not decrypt channel token: wrong OUTBOX_ENCRYPTION_KEY or tampered data"

V2_PREFIX = "v2:"
KEY_BYTES_V2 = 32
_KEY_ID_V2_LABEL = b"whapi-outbox key id v2"
_WEAK_KEY = (
    f"{ENCRYPTION_KEY_ENV} must be 32 random bytes in base64 (`outbox keys generate` prints "
    "one); a passphrase from an older version goes in OUTBOX_ENCRYPTION_KEY_OLD until "
    "`outbox tokens rotate-key` has rewritten the tokens"
)


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a ciphertext is stored, bound into it as associated data."""

    channel_id: uuid.UUID
    base_url: str | None
    purpose: str = "token"  # or "webhook-secret"

    def associated_data(self, key_id_: str) -> bytes:
        return "|".join(("whapi-outbox", self.purpose, "v2", str(self.channel_id), key_id_,
                         self.base_url or "")).encode("utf-8")


def generate_key() -> str:
    """A new OUTBOX_ENCRYPTION_KEY: 32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES_V2)).decode("ascii")


def strong_key_bytes(key: str) -> bytes | None:
    """The 32 bytes a base64 key holds, or None when `key` is not one (a
    passphrase of an older version, or anything else)."""
    if not isinstance(key, str):
        return None
    text_ = key.strip()
    try:
        raw = base64.b64decode(text_ + "=" * (-len(text_) % 4),
                               altchars=b"-_" if ("-" in text_ or "_" in text_) else None,
                               validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == KEY_BYTES_V2 else None


def require_strong_key(key: str | None) -> str:
    """`key` if it is 32 random bytes in base64; `MissingEncryptionKey` or
    `WeakEncryptionKey` (one line saying what to do) otherwise."""
    if key is None or not str(key).strip():
        raise MissingEncryptionKey(
            f"{ENCRYPTION_KEY_ENV} is not set: it is needed to encrypt and decrypt channel "
            "tokens (`outbox keys generate` prints one)", field=ENCRYPTION_KEY_ENV)
    raw = strong_key_bytes(key)
    if raw is None:
        raise WeakEncryptionKey(_WEAK_KEY, field=ENCRYPTION_KEY_ENV)
    if len(set(raw)) < 8:  # e.g. 32 zero bytes: base64 of something, but not random
        raise WeakEncryptionKey(_WEAK_KEY, field=ENCRYPTION_KEY_ENV)
    return key


def encrypt_token(token: str, key: str, binding: Binding | None = None) -> str:
    """Encrypt a token (or a webhook secret) for where `binding` says it is
    stored: `v2:iv:authTag:ciphertext`. A passphrase `key` (no binding)
    writes the older `salt:iv:authTag:ciphertext`, kept for reading and
    testing what older versions wrote."""
    _require_key(key)
    if not isinstance(token, str) or not token.strip():
        raise InvalidInput("channel token is empty", field="token")
    raw_key = strong_key_bytes(key)
    if raw_key is not None:
        if binding is None:
            raise ValueError("a v2 ciphertext needs the binding of where it is stored")
        iv = os.urandom(IV_BYTES)
        aad = binding.associated_data(key_id(key))
        sealed = AESGCM(raw_key).encrypt(iv, token.encode("utf-8"), aad)
        ciphertext, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
        return V2_PREFIX + ":".join(part.hex() for part in (iv, tag, ciphertext))
    salt = os.urandom(SALT_BYTES)
    iv = os.urandom(IV_BYTES)
    sealed = AESGCM(derive_key(key, salt)).encrypt(iv, token.encode("utf-8"), None)
    ciphertext, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
    return ":".join(part.hex() for part in (salt, iv, tag, ciphertext))


def decrypt_token(blob: str, key: str, binding: Binding | None = None) -> str:
    """Decrypt what `encrypt_token` produced, for the place `binding` names.

    Raises `MissingEncryptionKey`, `MalformedCiphertext` (not our format) or
    `DecryptionFailed` (wrong key, another channel's or base URL's
    ciphertext, or any byte changed).
    """
    _require_key(key)
    if isinstance(blob, str) and blob.startswith(V2_PREFIX):
        raw_key = strong_key_bytes(key)
        iv, tag, ciphertext = parse_blob_v2(blob)
        if raw_key is None or binding is None:
            raise DecryptionFailed(_DECRYPTION_FAILED)
        try:
            plaintext = AESGCM(raw_key).decrypt(iv, ciphertext + tag,
                                                binding.associated_data(key_id(key)))
        except InvalidTag:
            raise DecryptionFailed(_DECRYPTION_FAILED) from None
        return _text(plaintext)
    salt, iv, tag, ciphertext = parse_blob(blob)
    try:
        plaintext = AESGCM(derive_key(key, salt)).decrypt(iv, ciphertext + tag, None)
    except InvalidTag:
        raise DecryptionFailed(_DECRYPTION_FAILED) from None
    return _text(plaintext)


def _text(plaintext: bytes) -> str:
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        # Authenticated but not text: written by something else with our key.
        raise DecryptionFailed(
            "could not decrypt channel token: decrypted data is not UTF-8 text"
        ) from None


def parse_blob_v2(blob: str) -> tuple[bytes, bytes, bytes]:
    """Split and check `v2:iv:authTag:ciphertext`; the three parts as bytes."""
    parts = blob[len(V2_PREFIX):].split(":")
    if len(parts) != 3:
        raise MalformedCiphertext(
            f"malformed channel token: expected v2:iv:authTag:ciphertext, got {len(parts)} parts")
    out: list[bytes] = []
    for name, size, part in zip(("iv", "authTag", "ciphertext"), (IV_BYTES, TAG_BYTES, None),
                                parts, strict=True):
        if not part or not _HEX.fullmatch(part) or len(part) % 2:
            raise MalformedCiphertext(f"malformed channel token: {name} is not hex")
        raw = bytes.fromhex(part)
        if size is not None and len(raw) != size:
            raise MalformedCiphertext(
                f"malformed channel token: {name} must be {size} bytes, got {len(raw)}")
        out.append(raw)
    iv, tag, ciphertext = out
    return iv, tag, ciphertext


def parse_blob(blob: str) -> tuple[bytes, bytes, bytes, bytes]:
    """Split and check `salt:iv:authTag:ciphertext`; returns the four parts as bytes."""
    if not isinstance(blob, str) or not blob:
        raise MalformedCiphertext("malformed channel token: empty")
    parts = blob.split(":")
    if len(parts) != 4:
        raise MalformedCiphertext(
            "malformed channel token: expected 4 parts salt:iv:authTag:ciphertext, "
            f"got {len(parts)}"
        )
    names = ("salt", "iv", "authTag", "ciphertext")
    expected = (SALT_BYTES, IV_BYTES, TAG_BYTES, None)
    decoded: list[bytes] = []
    for name, size, part in zip(names, expected, parts, strict=True):
        if not part:
            raise MalformedCiphertext(f"malformed channel token: {name} is empty")
        if not _HEX.fullmatch(part) or len(part) % 2:
            raise MalformedCiphertext(f"malformed channel token: {name} is not hex")
        raw = bytes.fromhex(part)
        if size is not None and len(raw) != size:
            raise MalformedCiphertext(
                f"malformed channel token: {name} must be {size} bytes, got {len(raw)}"
            )
        decoded.append(raw)
    salt, iv, tag, ciphertext = decoded
    return salt, iv, tag, ciphertext


def derive_key(key: str, salt: bytes) -> bytes:
    """PBKDF2-HMAC-SHA256, 100,000 iterations, 32 bytes. Costs ~50 ms."""
    _require_key(key)
    return hashlib.pbkdf2_hmac(
        "sha256", key.encode("utf-8"), salt, PBKDF2_ITERATIONS, dklen=KEY_BYTES
    )


def key_id(key: str) -> str:
    """A short, stable fingerprint of the passphrase, stored beside each token.

    Tells which key encrypted a row during key rotation. It reveals nothing
    about the key beyond what the encrypted tokens already do: testing a guess
    costs one full PBKDF2 derivation either way.
    """
    _require_key(key)
    return _key_id(key)


@functools.lru_cache(maxsize=8)
def _key_id(key: str) -> str:
    raw = strong_key_bytes(key)
    if raw is not None:
        # 32 random bytes can't be guessed, so a keyed hash reveals nothing.
        return hmac.new(raw, _KEY_ID_V2_LABEL, hashlib.sha256).hexdigest()[:KEY_ID_HEX_CHARS]
    # A passphrase's id costs a full derivation, like a guess at its tokens.
    # Cached: the same few keys are asked about on every channel add and
    # rotation check, and the derivation is deliberately slow.
    return derive_key(key, _KEY_ID_SALT).hex()[:KEY_ID_HEX_CHARS]


def _require_key(key: str) -> None:
    if not isinstance(key, str) or not key.strip():
        raise MissingEncryptionKey(
            f"{ENCRYPTION_KEY_ENV} is not set: it is needed to encrypt and decrypt "
            "channel tokens (set it in the environment or .env)",
            field=ENCRYPTION_KEY_ENV,
        )
