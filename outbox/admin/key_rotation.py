"""Encryption key rotation for channel tokens, webhook secrets and the
status-callback endpoints' signing secrets: `outbox tokens rotate-key` and
`outbox tokens check`.

Rotation, step by step:

1. deploy with `OUTBOX_ENCRYPTION_KEY=<new>` and `OUTBOX_ENCRYPTION_KEY_OLD=<old>`:
   dispatchers read tokens under either key (each row's `key_id` says which),
   so a rolling deploy never stops sending;
2. `outbox tokens rotate-key`: every token not yet on the new key is
   decrypted with the old one and encrypted with the new one, all in one
   transaction (an error or a kill half-way leaves every row as it was); so
   is every webhook secret, including those older versions kept in the
   clear (which the webhook refuses by default) and the previous secret of
   a channel whose webhook secret was replaced (while it is still accepted);
   and, last, every status-callback endpoint's signing secret (disabled
   endpoints too: they can be enabled again);
3. `outbox tokens check` (exit 0), then drop `OUTBOX_ENCRYPTION_KEY_OLD`.

Cost: between two current keys, next to nothing per token; a token written
with an older version's passphrase pays one PBKDF2 derivation (~50 ms) to
decrypt, so that upgrade takes seconds for hundreds of channels and
minutes for thousands. The transaction holds row locks on `channel_tokens` meanwhile; that blocks
no claim or send (the dispatcher's credential read is a plain SELECT), only
another rotation. The endpoints come last, just before the commit: the
callback sender's update to a failing endpoint waits that long, not for
the whole rotation.
A channel or endpoint added by a process still on the old key while the
rotation runs is picked up by running the rotation again (it is
idempotent: rows already on the new key are skipped).

Errors never name a token, a secret or a key, only the channel or endpoint.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from outbox import crypto
from outbox.admin.channels import WEBHOOK_SECRET, stored_in_clear, webhook_secret_of
from outbox.db import admin_queries as q
from outbox.errors import ConfigurationError, CryptoError, DecryptionFailed, MissingEncryptionKey
from outbox.events.callbacks import secret_binding

OLD_KEY_ENV = "OUTBOX_ENCRYPTION_KEY_OLD"


@dataclass(frozen=True, slots=True)
class RotationResult:
    reencrypted: int  # channel tokens
    already_current: int
    endpoints_reencrypted: int  # status-callback endpoints' signing secrets
    endpoints_already_current: int

    def line(self) -> str:
        return (f"re-encrypted {_count(self.reencrypted, 'token')}, "
                f"{self.already_current} already on the current key; "
                f"re-encrypted {_count(self.endpoints_reencrypted, 'endpoint secret')}, "
                f"{self.endpoints_already_current} already on the current key")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


@dataclass(frozen=True, slots=True)
class TokenCheck:
    channel_id: uuid.UUID
    name: str
    workspace_id: str
    status: str
    key: str  # "current" | "old" | "unknown" | "none" (which key the row's key_id names)
    ok: bool  # decrypts with the current key
    problem: str | None = None
    #: The channel's webhook secret is stored in the clear (refused by the
    #: webhook by default): rotate-key encrypts it.
    secret_in_clear: bool = False
    #: The secret a rotation replaced, still accepted, does not decrypt with
    #: the current key: rotate-key re-encrypts it.
    previous_secret_unreadable: bool = False


@dataclass(frozen=True, slots=True)
class EndpointSecretCheck:
    endpoint_id: uuid.UUID
    workspace_id: str
    url: str
    status: str
    key: str  # "current" | "old" | "unknown" (which key the row's key_id names)
    ok: bool  # decrypts with the current key: its callbacks can be signed
    problem: str | None = None


def rotate_keys(
    session: Session,
    *,
    new_key: str | None,
    old_key: str | None,
    on_progress: Callable[[int, int], None] | None = None,
) -> RotationResult:
    """Re-encrypt every channel token, webhook secret and endpoint signing
    secret from `old_key` to `new_key` inside the caller's transaction (the
    caller commits; any exception means roll back).

    Rows whose `key_id` is already the new key's are skipped. A row that
    decrypts with neither key raises `DecryptionFailed` naming its channel
    or endpoint.
    """
    new_key, old_key = require_rotation_keys(new_key, old_key)
    new_id = crypto.key_id(new_key)

    rows = session.execute(text(q.TOKENS_FOR_ROTATION)).all()
    reencrypted = skipped = 0
    for n, row in enumerate(rows, start=1):
        sealed = _under_new_key(row.encrypted_token, row.key_id, new_key, new_id, old_key,
                                crypto.Binding(row.channel_id, row.base_url),
                                what=f"channel {row.channel_id}: token", field="encrypted_token")
        if sealed is None:
            skipped += 1
        else:
            session.execute(text(q.STORE_REENCRYPTED), {
                "channel_id": row.channel_id, "encrypted_token": sealed, "key_id": new_id})
            reencrypted += 1
        _reseal_webhook_secret(session, row, new_key, old_key)
        if on_progress is not None:
            on_progress(n, len(rows))
    for row in session.execute(text(q.TOKENLESS_CHANNELS_FOR_ROTATION)).all():
        _reseal_webhook_secret(session, row, new_key, old_key)
    endpoints_reencrypted, endpoints_skipped = _reseal_endpoint_secrets(
        session, new_key, new_id, old_key)
    return RotationResult(reencrypted, skipped, endpoints_reencrypted, endpoints_skipped)


def _reseal_endpoint_secrets(session: Session, new_key: str, new_id: str,
                             old_key: str) -> tuple[int, int]:
    """Every status-callback endpoint's signing secret under the new key:
    how many were re-encrypted, and how many were on it already."""
    reencrypted = skipped = 0
    for row in session.execute(text(q.ENDPOINT_SECRETS_FOR_ROTATION)).all():
        sealed = _under_new_key(row.encrypted_secret, row.key_id, new_key, new_id, old_key,
                                secret_binding(row.id, row.url),
                                what=f"webhook endpoint {row.id}: signing secret",
                                field="encrypted_secret")
        if sealed is None:
            skipped += 1
            continue
        session.execute(text(q.STORE_ENDPOINT_CIPHERTEXT), {
            "endpoint_id": row.id, "encrypted_secret": sealed, "key_id": new_id})
        reencrypted += 1
    return reencrypted, skipped


def _under_new_key(blob: str, key_id: str | None, new_key: str, new_id: str, old_key: str,
                   binding: crypto.Binding, *, what: str, field: str) -> str | None:
    """`blob` encrypted under the new key; None when it already is."""
    if key_id == new_id and blob.startswith(crypto.V2_PREFIX):
        return None
    # Old key first (that is what a key_id other than the new one should
    # mean); a row whose key_id is stale or foreign still gets a chance with
    # the new key before we give up.
    clear = _decrypt_with_any(blob, [old_key, new_key], binding, what=what, field=field)
    return crypto.encrypt_token(clear, new_key, binding)


def _reseal_webhook_secret(session: Session, row: Row[Any], new_key: str, old_key: str) -> None:
    """The channel's webhook secret under the new key: from the old key, or
    from the clear (older versions, which the webhook refuses by default);
    and the secret a rotation replaced, if it is still in its grace window."""
    secret = webhook_secret_of(row.channel_id, row.webhook_secret, row.base_url,
                               [new_key, old_key])
    sealed = crypto.Binding(row.channel_id, row.base_url, purpose=WEBHOOK_SECRET)
    if not _sealed_with(row.webhook_secret, new_key, sealed):
        session.execute(text(q.STORE_WEBHOOK_CIPHERTEXT), {
            "channel_id": row.channel_id,
            "webhook_secret": crypto.encrypt_token(secret, new_key, sealed)})
    _reseal_previous_webhook_secret(session, row, new_key, old_key, sealed)


def _reseal_previous_webhook_secret(session: Session, row: Row[Any], new_key: str,
                                    old_key: str, sealed: crypto.Binding) -> None:
    """The replaced secret under the new key. One past its window, or in
    the clear (a rotation never keeps one: someone wrote it), is dropped:
    no webhook takes it, and it may not decrypt once the old key is gone."""
    stored = row.previous_webhook_secret
    if stored is None:
        return
    if not row.previous_live or stored_in_clear(stored):
        session.execute(text(q.STORE_PREVIOUS_WEBHOOK_CIPHERTEXT),
                        {"channel_id": row.channel_id, "previous": None})
    elif not _sealed_with(stored, new_key, sealed):
        previous = webhook_secret_of(row.channel_id, stored, row.base_url, [new_key, old_key])
        session.execute(text(q.STORE_PREVIOUS_WEBHOOK_CIPHERTEXT), {
            "channel_id": row.channel_id,
            "previous": crypto.encrypt_token(previous, new_key, sealed)})


def require_rotation_keys(new_key: str | None, old_key: str | None) -> tuple[str, str]:
    """Both keys, set and different; else a one-line configuration error."""
    if not new_key:
        raise MissingEncryptionKey(
            f"{crypto.ENCRYPTION_KEY_ENV} is not set: it is the key to rotate to",
            field=crypto.ENCRYPTION_KEY_ENV)
    crypto.require_strong_key(new_key)
    if not old_key:
        raise MissingEncryptionKey(
            f"{OLD_KEY_ENV} is not set: it must hold the key the tokens are encrypted with now",
            field=OLD_KEY_ENV)
    if old_key == new_key:
        raise ConfigurationError(
            f"{OLD_KEY_ENV} equals {crypto.ENCRYPTION_KEY_ENV}: nothing to rotate",
            field=OLD_KEY_ENV)
    return new_key, old_key


def check_tokens(
    session: Session,
    *,
    current_key: str,
    old_key: str | None = None,
    workspace_id: str | None = None,
) -> list[TokenCheck]:
    """Whether each channel's token decrypts with the current key, and whether
    its webhook secret is still in the clear (no token or secret is returned)."""
    current_id = crypto.key_id(current_key)
    old_id = crypto.key_id(old_key) if old_key else None
    out: list[TokenCheck] = []
    for row in session.execute(text(q.TOKENS_FOR_CHECK), {"workspace_id": workspace_id}):
        key, token_problem = _check_token(row, current_key, current_id, old_key, old_id)
        previous_unreadable = not _previous_secret_readable(row, current_key)
        problems = [p for p in (token_problem, row.secret_in_clear and _SECRET_IN_CLEAR,
                                previous_unreadable and _PREVIOUS_UNREADABLE) if p]
        out.append(TokenCheck(row.id, row.name, row.workspace_id, row.status, key,
                              ok=token_problem is None, problem="; ".join(problems) or None,
                              secret_in_clear=row.secret_in_clear,
                              previous_secret_unreadable=previous_unreadable))
    return out


def check_endpoint_secrets(
    session: Session,
    *,
    current_key: str,
    old_key: str | None = None,
    workspace_id: str | None = None,
) -> list[EndpointSecretCheck]:
    """Whether each status-callback endpoint's signing secret decrypts with
    the current key, as the callback sender must read it once the old key
    is gone (no secret is returned)."""
    current_id = crypto.key_id(current_key)
    old_id = crypto.key_id(old_key) if old_key else None
    out: list[EndpointSecretCheck] = []
    for row in session.execute(text(q.ENDPOINT_SECRETS_FOR_CHECK),
                               {"workspace_id": workspace_id}):
        binding = secret_binding(row.id, row.url)
        problem = None
        if not _sealed_with(row.encrypted_secret, current_key, binding):
            problem = (f"signing secret encrypted with {OLD_KEY_ENV} only: "
                       "run 'outbox tokens rotate-key'"
                       if old_key and _sealed_with(row.encrypted_secret, old_key, binding) else
                       f"signing secret does not decrypt with {crypto.ENCRYPTION_KEY_ENV} "
                       "(another key, or tampered data): its callbacks can't be signed")
        out.append(EndpointSecretCheck(row.id, row.workspace_id, row.url, row.status,
                                       _key_named(row.key_id, current_id, old_id),
                                       ok=problem is None, problem=problem))
    return out


_SECRET_IN_CLEAR = ("webhook secret stored in the clear (its webhooks are refused): "  # noqa: S105
                    "run 'outbox tokens rotate-key'")


_PREVIOUS_UNREADABLE = ("previous webhook secret does not decrypt with the current key "
                        "(webhooks with it are refused): run 'outbox tokens rotate-key'")


def _previous_secret_readable(row: Row[Any], current_key: str) -> bool:
    """Whether the replaced webhook secret still in its window (if any)
    decrypts with the current key, as the webhook must read it."""
    stored = row.previous_webhook_secret
    binding = crypto.Binding(row.id, row.base_url, purpose=WEBHOOK_SECRET)
    return stored is None or (not stored_in_clear(stored)
                              and _sealed_with(stored, current_key, binding))


def _check_token(row: Row[Any], current_key: str, current_id: str, old_key: str | None,
                 old_id: str | None) -> tuple[str, str | None]:
    """Which key the row's key_id names, and what is wrong with its token (None: nothing)."""
    if row.encrypted_token is None:
        return "none", "channel has no token"
    key = _key_named(row.key_id, current_id, old_id)
    binding = crypto.Binding(row.id, row.base_url)
    try:
        crypto.decrypt_token(row.encrypted_token, current_key, binding)
        if not row.encrypted_token.startswith(crypto.V2_PREFIX):
            raise DecryptionFailed("written by an older version with a passphrase: run "
                                   "'outbox tokens rotate-key' to bind it to its channel")
    except CryptoError as exc:
        if old_key:
            try:
                crypto.decrypt_token(row.encrypted_token, old_key, binding)
            except CryptoError:
                pass
            else:
                return key, f"encrypted with {OLD_KEY_ENV} only: run 'outbox tokens rotate-key'"
        return key, exc.message
    return key, None


def _key_named(key_id: str, current_id: str, old_id: str | None) -> str:
    return "current" if key_id == current_id else "old" if key_id == old_id else "unknown"


def _sealed_with(stored: str, key: str, binding: crypto.Binding) -> bool:
    """Whether `stored` is already encrypted with `key` for `binding`."""
    if not stored.startswith(crypto.V2_PREFIX):
        return False
    try:
        crypto.decrypt_token(stored, key, binding)
    except CryptoError:
        return False
    return True


def _decrypt_with_any(blob: str, keys: list[str], binding: crypto.Binding, *, what: str,
                      field: str) -> str:
    """`blob` decrypted with the first of `keys` that can; else an error
    that names `what` (a channel's token, an endpoint's secret), never the blob."""
    for key in keys:
        try:
            return crypto.decrypt_token(blob, key, binding)
        except CryptoError:
            continue
    raise DecryptionFailed(
        f"{what} decrypts with neither {crypto.ENCRYPTION_KEY_ENV} nor "
        f"{OLD_KEY_ENV}; nothing was changed", field=field)
