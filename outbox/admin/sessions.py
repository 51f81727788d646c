"""Sessions: what signing in gives a console user.

A session token reads `ws_<secret>` (API keys read `wo_...`, so one
Authorization header takes either). Only its SHA-256 is stored, and the row
is found by that hash: the secret has 256 bits, so there is nothing to
brute-force and nothing to learn from how long a lookup takes. A session
ends at `expires_at` (SESSION_TTL_SECONDS after sign-in), when revoked (sign
out), or when its user is disabled.
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

from outbox.admin.access import ROLE_SCOPES, Principal
from outbox.admin.users import (
    MAX_PASSWORD_LENGTH,
    UserInfo,
    hash_password,
    normalize_email,
    verify_password,
)
from outbox.db import access_queries as q
from outbox.errors import InvalidInput, Unauthorized
from outbox.message_types import check_workspace_id

SESSION_SCHEME = "ws"
SECRET_BYTES = 32
SESSION_TTL_SECONDS = 12 * 3600  # a working day; then sign in again


@dataclass(frozen=True, slots=True)
class NewSession:
    id: uuid.UUID
    token: str  # shown once, never stored
    expires_at: datetime
    user: UserInfo


def is_session_token(token: str) -> bool:
    return token.startswith(f"{SESSION_SCHEME}_")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(session: Session, *, workspace_id: str, email: str, password: str) -> NewSession:
    """A new session for the user with this email and password; `Unauthorized`
    with one message for every failure (unknown workspace or email, wrong
    password, disabled user), after the same Argon2 work."""
    workspace_id = check_workspace_id(workspace_id)
    email = normalize_email(email)
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must be text of at most {MAX_PASSWORD_LENGTH} characters",
                           field="password")
    row = session.execute(text(q.USER_FOR_LOGIN),
                          {"workspace_id": workspace_id, "email": email}).one_or_none()
    matches, rehash = verify_password(row.password_hash if row is not None else None, password)
    if row is None or not matches or row.disabled_at is not None:
        raise Unauthorized("wrong email or password")
    if rehash:
        session.execute(text(q.STORE_REHASHED),
                        {"id": row.id, "password_hash": hash_password(password)})
    token = f"{SESSION_SCHEME}_{secrets.token_urlsafe(SECRET_BYTES)}"
    created = session.execute(text(q.INSERT_SESSION), {
        "user_id": row.id, "token_hash": hash_token(token), "ttl_seconds": SESSION_TTL_SECONDS,
    }).one()
    return NewSession(created.id, token, created.expires_at, UserInfo.of(row))


def authenticate_session(session: Session, token: str) -> Principal:
    """The principal of a live session token; `Unauthorized` otherwise."""
    row = None
    if is_session_token(token) and len(token) <= 512:
        row = session.execute(text(q.LIVE_SESSION),
                              {"token_hash": hash_token(token)}).one_or_none()
    if row is None:
        raise Unauthorized("invalid, expired or revoked session; sign in again")
    return Principal(row.workspace_id, ROLE_SCOPES[row.role], user_id=row.user_id,
                     session_id=row.id)


def sign_out(session: Session, session_id: uuid.UUID) -> None:
    session.execute(text(q.REVOKE_SESSION), {"id": session_id})


def sign_out_token(session: Session, token: str) -> None:
    """End the session of `token`, if it is one (signing in over an old
    cookie ends that session: a session id planted before sign-in is dead)."""
    if is_session_token(token) and len(token) <= 512:
        session.execute(text(q.REVOKE_SESSION_BY_HASH), {"token_hash": hash_token(token)})


def csrf_token(token: str) -> str:
    """The CSRF token of a session: an HMAC of a fixed label keyed by the
    session token. It can only be computed from the token, which page scripts
    never see (HttpOnly cookie), and it dies with the session; nothing to store."""
    return hmac.new(token.encode(), b"outbox console csrf v1", hashlib.sha256).hexdigest()


def user_of_session(session: Session, session_id: uuid.UUID) -> UserInfo:
    """The user a live session belongs to."""
    row = session.execute(text(q.USER_OF_SESSION), {"id": session_id}).one_or_none()
    if row is None:
        raise Unauthorized("invalid, expired or revoked session; sign in again")
    return UserInfo.of(row)
