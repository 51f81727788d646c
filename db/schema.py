"""The PostgreSQL schema our tables live in (OUTBOX_DB_SCHEMA, default `outbox`).

Every table, index and sequence of ours is in this one schema, and our own
migration history too (`<schema>.alembic_version`), so an application's
tables and its own Alembic history in the same database are never touched.

Statements name their tables with the schema, written as `outbox.messages`
in db/queries.py and elsewhere: that is the SQL the default installation
runs, readable and runnable as is in psql, whatever the caller's
`search_path`. An installation with another schema runs the same statements
with that prefix put in (`in_schema`), once per statement text.
"""

from __future__ import annotations

import functools
import re

DEFAULT_SCHEMA = "outbox"
VERSION_TABLE = "alembic_version"

# Our tables, as statements name them. `in_schema` only touches these (and
# FUNCTIONS), so a column or a string that happens to say "outbox." is left
# alone.
TABLES = (
    "channels", "channel_tokens", "contacts", "chats", "messages", "outbox_messages",
    "api_keys", "webhook_status_backlog", "webhook_pending", "webhook_dead_letters",
    "users", "sessions", "channel_pacing", "events", "webhook_endpoints",
    "webhook_deliveries", "webhook_fanout", VERSION_TABLE,
)
# Our functions (migration 0010), with their argument lists: statements
# call next_event_id(); the events table's trigger runs notify_events().
FUNCTIONS = ("next_event_id()", "notify_events()")

_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_QUALIFIED = re.compile(
    r'(?<![\w".])"?' + DEFAULT_SCHEMA + r'"?\.(?=(?:'
    + "|".join((*TABLES, *(f.removesuffix("()") for f in FUNCTIONS))) + r')\b)'
)


class InvalidSchemaName(ValueError):
    """OUTBOX_DB_SCHEMA is not a plain lower-case identifier."""


def check_schema_name(name: str) -> str:
    """`name` if it is a lower-case identifier PostgreSQL takes unquoted
    (so it is the same name in SQL, in psql and in `pg_namespace`)."""
    if not _SCHEMA_NAME.fullmatch(name) or name.startswith("pg_"):
        raise InvalidSchemaName(
            f"{name!r} is not a schema name we can use: lower-case letters, "
            "digits and underscores, not starting with a digit or pg_, at most 63 characters")
    return name


@functools.lru_cache(maxsize=1024)
def in_schema(sql: str, schema: str) -> str:
    """`sql` with our tables in `schema` instead of the default one."""
    if schema == DEFAULT_SCHEMA:
        return sql
    return _QUALIFIED.sub(check_schema_name(schema) + ".", sql)
