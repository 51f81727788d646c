"""Encryption of channel tokens at rest.

Format (DESIGN.md, `channel_tokens.encrypted_token`)::

    salt:iv:authTag:ciphertext      each part hex

- key: PBKDF2-HMAC-SHA256(passphrase from OUTBOX_ENCRYPTION_KEY, salt,
  100,000 iterations) -> 32 bytes;
- cipher: AES-256-GCM, random 12-byte IV, the 16-byte tag stored on its own
  (not appended to the ciphertext), no associated data.

Every encryption draws a fresh salt, so every decryption pays one key
derivation (~50 ms). That is deliberate (a stolen database costs an attacker
the same per guess) and is why the dispatcher decrypts a channel's token once
and caches the plaintext.

Nothing here ever puts a token, a passphrase or a plaintext into an exception
message; exceptions from `cryptography` are replaced (``from None``) rather
than chained.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from outbox.errors import DecryptionFailed, InvalidInput, MalformedCiphertext, MissingEncryptionKey

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


def encrypt_token(token: str, key: str) -> str:
    """Encrypt a channel token with a passphrase; returns `salt:iv:authTag:ciphertext`."""
    _require_key(key)
    if not isinstance(token, str) or not token.strip():
        raise InvalidInput("channel token is empty", field="token")
    salt = os.urandom(SALT_BYTES)
    iv = os.urandom(IV_BYTES)
    sealed = AESGCM(derive_key(key, salt)).encrypt(iv, token.encode("utf-8"), None)
    ciphertext, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
    return ":".join(part.hex() for part in (salt, iv, tag, ciphertext))


def decrypt_token(blob: str, key: str) -> str:
    """Decrypt what `encrypt_token` produced.

    Raises `MissingEncryptionKey`, `MalformedCiphertext` (not our format) or
    `DecryptionFailed` (wrong key, or any byte changed).
    """
    _require_key(key)
    salt, iv, tag, ciphertext = parse_blob(blob)
    try:
        plaintext = AESGCM(derive_key(key, salt)).decrypt(iv, ciphertext + tag, None)
    except InvalidTag:
        raise DecryptionFailed(_DECRYPTION_FAILED) from None
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        # Authenticated but not text: written by something else with our key.
        raise DecryptionFailed(
            "could not decrypt channel token: decrypted data is not UTF-8 text"
        ) from None


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
