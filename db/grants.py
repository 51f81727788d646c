"""Least-privilege grants for the three roles a deployment uses.

* the migration role owns the schema and everything in it (`outbox db
  upgrade` runs as it); nothing else needs to own anything;
* the service role (`outbox run`, `dispatch --once`, `outbox serve`) reads
  and writes rows in every table of ours, and can't change their shape;
* the application's role (the one its own sessions use to call
  `enqueue_*`) reads channels and adds contacts, chats and messages, and
  nothing more: it can't see channel tokens, change a queued row or read
  API keys.

`outbox db grants` prints these statements for a DBA to run as the
migration role (an owner can grant on what it owns).
"""

from __future__ import annotations

from outbox.db.schema import check_schema_name

# What ENQUEUE and CHANNELS_FOR_ENQUEUE (db/queries.py) touch (ENQUEUE
# writes each message's `message.queued` event too). Foreign-key
# checks run as the tables' owner, so the application needs nothing on
# the tables they point at.
ENQUEUE_SELECT = ("channels",)
ENQUEUE_INSERT = ("contacts", "chats", "messages", "outbox_messages", "events")


def grant_statements(schema: str, *, service_role: str | None = None,
                     app_role: str | None = None, owner_role: str | None = None) -> list[str]:
    """GRANT statements for the roles given. `owner_role`: the migration role,
    named so tables its later migrations create reach the service role too."""
    schema = check_schema_name(schema)
    out: list[str] = []
    if service_role:
        role = _ident(service_role)
        out += [
            f"GRANT USAGE ON SCHEMA {schema} TO {role};",
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role};",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role};",
        ]
        if owner_role:
            owner = _ident(owner_role)
            out += [
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} "
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role};",
                f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} "
                f"GRANT USAGE, SELECT ON SEQUENCES TO {role};",
            ]
    if app_role:
        role = _ident(app_role)
        out.append(f"GRANT USAGE ON SCHEMA {schema} TO {role};")
        out += [f"GRANT SELECT ON {schema}.{t} TO {role};" for t in ENQUEUE_SELECT]
        out += [f"GRANT SELECT, INSERT ON {schema}.{t} TO {role};" for t in ENQUEUE_INSERT]
    return out


def _ident(name: str) -> str:
    """A role name as an SQL identifier (quoted, so any name a role can have works)."""
    if not name or "\x00" in name:
        raise ValueError("a role name can't be empty")
    return '"' + name.replace('"', '""') + '"'
