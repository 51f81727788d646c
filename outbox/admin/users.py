"""Console users: people who sign in to one workspace with a role.

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's
low-memory profile: 64 MiB, 3 passes). A hash costs a quarter of a second
and 64 MiB, so at most MAX_CONCURRENT_HASHES run at once: a burst of
sign-ins queues instead of exhausting memory.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Row, text
from sqlalchemy.orm import Session

from outbox.admin.access import ROLE_SCOPES, check_role
from outbox.db import access_queries as q
from outbox.db.states import Scope
from outbox.errors import InvalidInput, NotFound, UserExists
from outbox.message_types import check_workspace_id, is_utf8

MIN_PASSWORD_LENGTH = 12
# Argon2 takes any length; this bounds what one sign-in makes us hash.
MAX_PASSWORD_LENGTH = 1024
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a forward path
MAX_CONCURRENT_HASHES = 4

_hasher = PasswordHasher()
_hashing = threading.BoundedSemaphore(MAX_CONCURRENT_HASHES)


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: uuid.UUID
    workspace_id: str
    email: str
    role: str
    created_at: datetime
    disabled_at: datetime | None

    @classmethod
    def of(cls, r: Row[Any]) -> UserInfo:
        return cls(r.id, r.workspace_id, r.email, r.role, r.created_at, r.disabled_at)

    @property
    def scopes(self) -> frozenset[Scope]:
        return ROLE_SCOPES[self.role]


def normalize_email(email: object) -> str:
    """Trimmed and lower-cased (one account per address, however it is typed)."""
    if not isinstance(email, str):
        raise InvalidInput("email must be text", field="email")
    email = email.strip().lower()
    local, at, domain = email.rpartition("@")
    if (not at or not local or "." not in domain or len(email) > MAX_EMAIL_LENGTH
            or any(ch.isspace() or ch == "\x00" for ch in email) or not is_utf8(email)):
        raise InvalidInput("email must be an address like name@example.com", field="email")
    return email


def hash_password(password: str) -> str:
    if not isinstance(password, str) or not is_utf8(password):
        raise InvalidInput("password must be text", field="password")
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} "
                           "characters", field="password")
    with _hashing:
        return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> tuple[bool, bool]:
    """(matches, needs rehash). With no stored hash (no such user), a dummy
    one is verified, so the answer takes as long as for a real account."""
    with _hashing:
        try:
            _hasher.verify(stored_hash or _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return False, False
    if stored_hash is None:
        return False, False
    return True, _hasher.check_needs_rehash(stored_hash)


@cache
def _dummy_hash() -> str:
    return _hasher.hash("not anyone's password")


def create_user(session: Session, *, workspace_id: str, email: str, role: str,
                password: str) -> UserInfo:
    """Add a user to the caller's transaction; `UserExists` if the email is taken."""
    workspace_id = check_workspace_id(workspace_id)
    email = normalize_email(email)
    role = check_role(role)
    row = session.execute(text(q.INSERT_USER), {
        "workspace_id": workspace_id, "email": email, "role": role,
        "password_hash": hash_password(password),
    }).one_or_none()
    if row is None:
        raise UserExists(f"workspace {workspace_id!r} already has a user {email}", field="email")
    return UserInfo.of(row)


def list_users(session: Session, *, workspace_id: str | None = None) -> list[UserInfo]:
    return [UserInfo.of(r)
            for r in session.execute(text(q.LIST_USERS), {"workspace_id": workspace_id})]


def disable_user(session: Session, *, workspace_id: str, email: str) -> UserInfo:
    """Disable a user and end their sessions (already disabled: unchanged)."""
    email = normalize_email(email)
    row = session.execute(text(q.DISABLE_USER),
                          {"workspace_id": workspace_id, "email": email}).one_or_none()
    if row is None:
        raise NotFound(f"workspace {workspace_id!r} has no user {email}", field="email")
    return UserInfo.of(row)
