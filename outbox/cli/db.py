"""`outbox db`: the schema (migrations, revision, URL, grants)."""

from __future__ import annotations

import argparse
from typing import Protocol

from outbox.cli.parser import EXIT_FAILURE, EXIT_OK, Commands, subcommands
from outbox.settings import Settings


class Migration(Protocol):
    """outbox.migrate.upgrade or downgrade."""

    def __call__(self, url: str, revision: str, *, schema: str | None = None) -> None: ...


def cmd_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.migrate import upgrade

    return _migrate(settings, upgrade, args.revision)


def cmd_downgrade(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.migrate import downgrade

    return _migrate(settings, downgrade, args.revision)


def _migrate(settings: Settings, move: Migration, revision: str) -> int:
    """Move the schema to `revision` and say from where to where."""
    from outbox.database import database_url
    from outbox.migrate import current_revision, shown

    url, schema = database_url(settings), settings.db_schema
    before = current_revision(url, schema=schema)
    move(url, revision, schema=schema)
    after = current_revision(url, schema=schema)
    print(f"{shown(url)}: {before or 'empty'} -> {after or 'empty'} (schema {schema})")
    return EXIT_OK


def cmd_url(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.database import database_url
    from outbox.db.conninfo import libpq_url
    from outbox.migrate import shown

    url = database_url(settings)
    url = libpq_url(url) if args.libpq else url
    # The password only when asked for (a terminal's scrollback, a CI log).
    print(url if args.show_password else shown(url))
    return EXIT_OK


def cmd_grants(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.db.grants import grant_statements
    from outbox.errors import InvalidInput

    if not (args.service_role or args.app_role):
        raise InvalidInput("name --service-role, --app-role or both")
    for statement in grant_statements(settings.db_schema, service_role=args.service_role,
                                      app_role=args.app_role, owner_role=args.owner_role):
        print(statement)
    return EXIT_OK


def cmd_current(args: argparse.Namespace, settings: Settings) -> int:
    from outbox.database import database_url
    from outbox.migrate import current_revision, head_revision

    current = current_revision(database_url(settings), schema=settings.db_schema)
    head = head_revision()
    behind = current != head
    print(f"{current or 'empty'} (head: {head}){' - run: outbox db upgrade' if behind else ''}")
    return EXIT_FAILURE if behind and args.check else EXIT_OK


def register(commands: Commands) -> None:
    db = subcommands(commands.add_parser("db", help="database schema"), "db_cmd")
    p = db.add_parser("upgrade", help="apply migrations")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(handler=cmd_upgrade)
    p = db.add_parser("downgrade", help="revert migrations")
    p.add_argument("revision", nargs="?", default="base")
    p.set_defaults(handler=cmd_downgrade)
    p = db.add_parser("url", help="print the database URL in use (starts the embedded server)")
    p.add_argument("--libpq", action="store_true", help="plain postgresql:// form for psql")
    p.add_argument("--show-password", action="store_true",
                   help="print the password too (else ***), e.g. for psql \"$(outbox db url "
                   "--libpq --show-password)\"")
    p.set_defaults(handler=cmd_url)
    p = db.add_parser("current", help="print the schema revision")
    p.add_argument("--check", action="store_true", help="exit 1 unless migrations are at head")
    p.set_defaults(handler=cmd_current)
    p = db.add_parser("grants", help="print least-privilege GRANTs for the service and "
                      "application roles (run them as the migration role)")
    p.add_argument("--service-role", help="the role of outbox run/dispatch/serve")
    p.add_argument("--app-role", help="the role the application enqueues with")
    p.add_argument("--owner-role", help="the migration role (so later tables are granted too)")
    p.set_defaults(handler=cmd_grants)
