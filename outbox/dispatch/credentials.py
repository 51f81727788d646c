"""Per-channel send credentials for the dispatcher: base URL and decrypted token.

Each channel's credentials are read once and cached, so a claim costs no
extra query per channel; a token written by an older version with a
passphrase also costs a PBKDF2 derivation (~50 ms of CPU) to decrypt, a
current (v2) token next to nothing. Decrypted tokens are keyed by the
ciphertext itself: a rotated key or a replaced token is a new entry. Entries
expire so that a changed base URL or status is seen within a minute.

The cache is shared by a runtime's dispatchers and reads through a
`DispatchStore` of its own per load; a failed read raises what every
dispatcher statement raises (`DatabaseUnavailable` or `StatementRefused`,
db/direct.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from outbox import crypto
from outbox.db.conninfo import DatabaseTarget, as_target
from outbox.db.dispatch_store import DispatchStore
from outbox.errors import CryptoError
from outbox.logging import register_secret

CACHE_TTL_SECONDS = 60.0

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Credentials:
    channel_id: uuid.UUID
    workspace_id: str
    base_url: str
    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Unusable:
    """A channel we can't send on (no token, undecryptable token)."""

    channel_id: uuid.UUID
    reason: str


class CredentialCache:
    def __init__(
        self,
        database: DatabaseTarget | AsyncEngine,
        *,
        default_base_url: str,
        keys: Iterable[str],
        ttl_seconds: float = CACHE_TTL_SECONDS,
    ) -> None:
        self._database = as_target(database)
        self._default_base_url = default_base_url.rstrip("/")
        # Current key first; the old one is tried during a rolling key rotation.
        self._keys = {crypto.key_id(k): k for k in keys if k}
        self._ttl = ttl_seconds
        self._entries: dict[uuid.UUID, tuple[float, Credentials | Unusable]] = {}
        self._decrypted: dict[str, str] = {}  # ciphertext -> token

    def __repr__(self) -> str:
        return f"CredentialCache(channels={len(self._entries)})"

    def cached(self) -> set[uuid.UUID]:
        """Channels whose credentials are loaded (usable or not)."""
        return set(self._entries)

    async def get_many(
        self, channel_ids: Iterable[uuid.UUID]
    ) -> dict[uuid.UUID, Credentials | Unusable]:
        now = time.monotonic()
        wanted = set(channel_ids)
        missing = [c for c in wanted if c not in self._entries or self._entries[c][0] < now]
        if missing:
            await self._load(missing, now)
        return {c: self._entries[c][1] for c in wanted}

    def forget(self, channel_id: uuid.UUID) -> None:
        self._entries.pop(channel_id, None)

    async def _load(self, channel_ids: list[uuid.UUID], now: float) -> None:
        # A store per load: loads are rare (start, then once a TTL per
        # channel), and nothing is left open between them. Its connections
        # open on first use: this read opens one.
        store = DispatchStore.to(self._database, application_name="outbox-credentials")
        try:
            rows = await store.channel_credentials(channel_ids)
        finally:
            await store.aclose()
        found = {row["id"]: row for row in rows}
        # All at once: for passphrase tokens PBKDF2 releases the GIL, so both
        # cores derive keys and the first claim doesn't wait for them in turn.
        entries = await asyncio.gather(*(self._entry(c, found.get(c)) for c in channel_ids))
        for channel_id, entry in zip(channel_ids, entries, strict=True):
            self._entries[channel_id] = (now + self._ttl, entry)

    async def _entry(self, channel_id: uuid.UUID, row: Any) -> Credentials | Unusable:
        if row is None:
            return Unusable(channel_id, "channel no longer exists")
        if row["encrypted_token"] is None:
            return Unusable(channel_id, "channel has no token")
        try:
            token = await self._decrypt(row["encrypted_token"], row["key_id"],
                                        crypto.Binding(channel_id, row["base_url"]))
        except CryptoError as exc:
            log.error("channel_token_unreadable", channel_id=str(channel_id),
                      key_id=row["key_id"], error=str(exc))
            return Unusable(channel_id, f"token can't be decrypted: {exc}")
        return Credentials(channel_id, row["workspace_id"],
                           (row["base_url"] or self._default_base_url).rstrip("/"), token)

    async def _decrypt(self, blob: str, key_id: str, binding: crypto.Binding) -> str:
        if blob in self._decrypted:
            return self._decrypted[blob]
        key = self._keys.get(key_id)
        candidates = [key] if key else list(self._keys.values())
        if not candidates:
            from outbox.errors import MissingEncryptionKey

            raise MissingEncryptionKey("OUTBOX_ENCRYPTION_KEY is not set: tokens can't be read")
        last: CryptoError | None = None
        for candidate in candidates:
            try:
                # A passphrase token's PBKDF2 is CPU work: keep it off the loop.
                token = await asyncio.to_thread(crypto.decrypt_token, blob, candidate, binding)
            except CryptoError as exc:
                last = exc
                continue
            register_secret(token)
            self._decrypted[blob] = token
            return token
        assert last is not None
        raise last
