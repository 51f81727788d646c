"""What sits between us and PostgreSQL (OUTBOX_DB_POOLER).

"session" behaves like "none" (a session pooler keeps each client on one
server connection); "transaction" (PgBouncer's pool_mode=transaction,
Supabase's pooler on port 6543) hands each transaction to any server
connection, so nothing may outlive one.

A module of its own so that settings can name it without importing
SQLAlchemy (db/engine.py), which `outbox dispatch --once` loads only when
it needs it.
"""

from __future__ import annotations

from typing import Literal

Pooler = Literal["none", "session", "transaction"]
