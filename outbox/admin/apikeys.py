"""API keys: one workspace per key, with scopes (outbox/admin/access.py),
shown once, stored as a hash.

A key reads `wo_<prefix>_<secret>`. The prefix (12 hex characters, not
secret) finds the row; the SHA-256 of the whole key is compared with the
stored one in constant time. The secret has 256 bits of entropy, so a plain
(fast) hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

# Principal is re-exported: routes name it from here.
from outbox.admin.access import DEFAULT_KEY_SCOPES, parse_scopes
from outbox.admin.access import Principal as Principal
from outbox.db import admin_queries as q
from outbox.db.states import Scope
from outbox.errors import InvalidInput, NotFound, Unauthorized
from outbox.message_types import check_workspace_id, is_utf8

KEY_SCHEME = "wo"
PREFIX_BYTES = 6  # 12 hex characters: finds the row, reveals nothing
SECRET_BYTES = 32
MAX_NAME_LENGTH = 200
# Compared against when the prefix is unknown, so a miss costs the same.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True, slots=True)
class NewApiKey:
    id: uuid.UUID
    workspace_id: str
    prefix: str
    key: str  # shown once, never stored
    scopes: frozenset[Scope] = DEFAULT_KEY_SCOPES


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: uuid.UUID
    workspace_id: str
    name: str | None
    prefix: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(session: Session, *, workspace_id: str, name: str | None = None,
                   scopes: str | frozenset[Scope] = DEFAULT_KEY_SCOPES) -> NewApiKey:
    """Add a key to the caller's transaction; the returned `key` is the only copy.
    `scopes`: a set, or names separated by commas (`"send,read"`)."""
    workspace_id = check_workspace_id(workspace_id)
    scopes = parse_scopes(scopes)
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_LENGTH
                             or "\x00" in name or not is_utf8(name)):
        raise InvalidInput(f"name must be at most {MAX_NAME_LENGTH} characters", field="name")
    prefix = secrets.token_hex(PREFIX_BYTES)
    key = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    row = session.execute(text(q.INSERT_API_KEY), {
        "workspace_id": workspace_id, "name": name, "prefix": prefix, "key_hash": hash_key(key),
        "scopes": sorted(scopes),
    }).one()
    return NewApiKey(row.id, workspace_id, prefix, key, scopes)


def authenticate(session: Session, authorization: str | None) -> Principal:
    """The principal for an `Authorization: Bearer <key>` header; `Unauthorized` otherwise."""
    key = bearer_token(authorization)
    if key is None:
        raise Unauthorized("missing or malformed Authorization header (expected: Bearer <key>)")
    prefix = _prefix_of(key)
    row = None
    if prefix is not None:
        row = session.execute(text(q.API_KEY_BY_PREFIX), {"prefix": prefix}).one_or_none()
    stored = row.key_hash if row is not None else _DUMMY_HASH
    if not hmac.compare_digest(stored.encode(), hash_key(key).encode()) or row is None:
        raise Unauthorized("invalid or revoked API key")
    return Principal(row.workspace_id, parse_scopes(row.scopes), api_key_id=row.id)


def list_api_keys(session: Session, *, workspace_id: str | None = None) -> list[ApiKeyInfo]:
    return [ApiKeyInfo(r.id, r.workspace_id, r.name, r.prefix, parse_scopes(r.scopes),
                       r.created_at, r.revoked_at)
            for r in session.execute(text(q.LIST_API_KEYS), {"workspace_id": workspace_id})]


def revoke_api_key(session: Session, key_id: str, *, workspace_id: str | None = None) -> None:
    """Revoke a key (only within `workspace_id`, when given: another
    workspace's key is not found)."""
    try:
        kid = uuid.UUID(key_id)
    except ValueError:
        raise InvalidInput(f"{key_id[:40]!r} is not an API key id", field="id") from None
    if session.execute(text(q.REVOKE_API_KEY),
                       {"id": kid, "workspace_id": workspace_id}).one_or_none() is None:
        raise NotFound(f"no active API key {kid}", field="id")


def bearer_token(authorization: str | None) -> str | None:
    """`Bearer <token>` → token; anything else → None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > 512:
        return None
    return token


def _prefix_of(key: str) -> str | None:
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_SCHEME or len(parts[1]) != 2 * PREFIX_BYTES:
        return None
    return parts[1]
