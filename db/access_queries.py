"""Console users and their sessions, as SQL (outbox/admin/users.py and
outbox/admin/sessions.py run them in the caller's session).

Emails arrive lower-cased; a session is found by the SHA-256 of its token.
"""

from __future__ import annotations

# --------------------------------------------------------------------------
# USERS
# --------------------------------------------------------------------------
INSERT_USER = """
INSERT INTO outbox.users (workspace_id, email, role, password_hash)
VALUES (:workspace_id, :email, :role, :password_hash)
ON CONFLICT (workspace_id, email) DO NOTHING
RETURNING id, workspace_id, email, role, created_at, disabled_at
"""

LIST_USERS = """
SELECT id, workspace_id, email, role, created_at, disabled_at
FROM outbox.users
WHERE CAST(:workspace_id AS text) IS NULL OR workspace_id = CAST(:workspace_id AS text)
ORDER BY workspace_id, email
"""

# Signing in: the hash is read even for a disabled user, so both cost the
# same Argon2 verification (no answer tells a disabled account apart).
USER_FOR_LOGIN = """
SELECT id, workspace_id, email, role, password_hash, created_at, disabled_at
FROM outbox.users
WHERE workspace_id = :workspace_id AND email = :email
"""

# A newer Argon2 parameter set, stored at the next successful sign-in.
STORE_REHASHED = """
UPDATE outbox.users SET password_hash = :password_hash WHERE id = CAST(:id AS uuid)
"""

# Disabled, and signed out everywhere in the same statement.
DISABLE_USER = """
WITH disabled AS (
    UPDATE outbox.users SET disabled_at = coalesce(disabled_at, now())
    WHERE workspace_id = :workspace_id AND email = :email
    RETURNING id, workspace_id, email, role, created_at, disabled_at
),
signed_out AS (
    UPDATE outbox.sessions s SET revoked_at = now()
    FROM disabled
    WHERE s.user_id = disabled.id AND s.revoked_at IS NULL
)
SELECT * FROM disabled
"""

# --------------------------------------------------------------------------
# SESSIONS
# --------------------------------------------------------------------------
INSERT_SESSION = """
INSERT INTO outbox.sessions (user_id, token_hash, expires_at)
VALUES (CAST(:user_id AS uuid), :token_hash,
        now() + make_interval(secs => CAST(:ttl_seconds AS float8)))
RETURNING id, expires_at
"""

# A live session of an enabled user. `last_seen_at` is written at most once
# a minute, so a busy console does not update its row on every request.
LIVE_SESSION = """
WITH found AS (
    SELECT s.id, s.user_id, s.expires_at, s.last_seen_at, u.workspace_id, u.email, u.role
    FROM outbox.sessions s
    JOIN outbox.users u ON u.id = s.user_id
    WHERE s.token_hash = :token_hash
      AND s.revoked_at IS NULL AND s.expires_at > now() AND u.disabled_at IS NULL
),
seen AS (
    UPDATE outbox.sessions s SET last_seen_at = now()
    FROM found
    WHERE s.id = found.id AND found.last_seen_at < now() - interval '1 minute'
)
SELECT id, user_id, expires_at, workspace_id, email, role FROM found
"""

REVOKE_SESSION = """
UPDATE outbox.sessions SET revoked_at = now()
WHERE id = CAST(:id AS uuid) AND revoked_at IS NULL
RETURNING id
"""

REVOKE_SESSION_BY_HASH = """
UPDATE outbox.sessions SET revoked_at = now()
WHERE token_hash = :token_hash AND revoked_at IS NULL
"""

USER_OF_SESSION = """
SELECT u.id, u.workspace_id, u.email, u.role, u.created_at, u.disabled_at
FROM outbox.sessions s
JOIN outbox.users u ON u.id = s.user_id
WHERE s.id = CAST(:id AS uuid)
"""

# Sessions that can no longer sign anyone in, kept `:keep_seconds` past
# their end (who was signed in when) and then deleted. The table holds about
# a day of logins: a scan is cheap.
PRUNE_SESSIONS = """
DELETE FROM outbox.sessions
WHERE id IN (
    SELECT id FROM outbox.sessions
    WHERE LEAST(expires_at, COALESCE(revoked_at, 'infinity'::timestamptz))
          < now() - make_interval(secs => :keep_seconds)
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
)
"""
