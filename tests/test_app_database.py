"""The outbox inside an application's own database.

A database prepared the way a backend team's looks: its own Alembic history
(a migration environment of its own, in a temporary folder) with `messages`,
`contacts`, `channels` and `chats` tables holding rows. `outbox db upgrade`
puts everything of ours in the `outbox` schema with our own version table:
the application's tables, rows and `alembic_version` stay byte for byte as
they were, its own migrations still move, and its autogenerate proposes
nothing about our objects. Then: enqueue in the application's session whose
search_path holds only its own schema, an installation made before the
schema existed moved with every row kept, and the least-privilege roles.
"""

from __future__ import annotations

import secrets
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, inspect, make_url, pool, text
from sqlalchemy.orm import Session

from outbox.database import make_engine
from outbox.db.admin import drop_database
from outbox.db.conninfo import libpq_url
from tests.conftest import TEST_KEY, _server_url
from tests.dispatch_helpers import cli, run_dispatcher

pytestmark = pytest.mark.slow  # fresh databases, migrated and rolled back

APP_TABLES = ("messages", "contacts", "channels", "chats")
APP_FIRST, APP_SECOND = "a1b2c3d4e5f6", "b2c3d4e5f6a7"

APP_ENV = '''
from alembic import context
from sqlalchemy import (Column, ForeignKey, Index, Integer, MetaData, Table, Text,
                        engine_from_config, pool)

from outbox.migrate import skip_outbox_schema

metadata = MetaData()
Table("contacts", metadata, Column("id", Integer, primary_key=True), Column("email", Text))
Table("channels", metadata, Column("id", Integer, primary_key=True), Column("slack", Text))
Table("chats", metadata, Column("id", Integer, primary_key=True),
      Column("contact_id", Integer, ForeignKey("contacts.id")), Column("topic", Text))
Table("messages", metadata, Column("id", Integer, primary_key=True),
      Column("chat_id", Integer, ForeignKey("chats.id")), Column("body", Text),
      Column("pinned", Integer), Index("ix_messages_chat_id", "chat_id"))

config = context.config
engine = engine_from_config(config.get_section(config.config_ini_section, {}),
                            prefix="sqlalchemy.", poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      include_schemas=True, include_name=skip_outbox_schema())
    with context.begin_transaction():
        context.run_migrations()
'''

APP_REVISION = '''
from alembic import op

revision = {revision!r}
down_revision = {down!r}


def upgrade():
{body}


def downgrade():
    pass
'''

APP_FIRST_BODY = """
    op.execute("CREATE TABLE contacts (id int PRIMARY KEY, email text)")
    op.execute("CREATE TABLE channels (id int PRIMARY KEY, slack text)")
    op.execute("CREATE TABLE chats (id int PRIMARY KEY, contact_id int REFERENCES contacts, "
               "topic text)")
    op.execute("CREATE TABLE messages (id int PRIMARY KEY, chat_id int REFERENCES chats, "
               "body text)")
    op.execute("CREATE INDEX ix_messages_chat_id ON messages (chat_id)")
    op.execute("INSERT INTO contacts VALUES (1, 'ana@example.com'), (2, 'bo@example.com')")
    op.execute("INSERT INTO channels VALUES (1, '#support')")
    op.execute("INSERT INTO chats VALUES (1, 1, 'refund'), (2, 2, NULL)")
    op.execute("INSERT INTO messages VALUES (1, 1, 'where is my order?'), (2, 2, 'thanks')")
"""
APP_SECOND_BODY = """
    op.execute("ALTER TABLE messages ADD COLUMN pinned int")
"""


@pytest.fixture
def fresh_url(fresh_database_url: str) -> str:
    return fresh_database_url


def _channel(engine: Engine, base_url: str) -> uuid.UUID:
    """A committed channel that sends to `base_url` (the simulator)."""
    from outbox.admin.channels import create_channel


    with Session(engine) as s, s.begin():
        return create_channel(s, name="shop", phone_number="+15550000001",
                              token=secrets.token_hex(16), encryption_key=TEST_KEY,
                              base_url=base_url).id


@pytest.fixture
def app_alembic(tmp_path: Path, fresh_url: str) -> Any:
    """The application's own migration environment, at its first revision."""
    from alembic.config import Config

    folder = tmp_path / "app_migrations"
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(APP_ENV)
    (folder / "script.py.mako").write_text("")
    for revision, down, body in ((APP_FIRST, None, APP_FIRST_BODY),
                                 (APP_SECOND, APP_FIRST, APP_SECOND_BODY)):
        body = textwrap.indent(textwrap.dedent(body).strip(), "    ")
        (folder / "versions" / f"{revision}.py").write_text(
            APP_REVISION.format(revision=revision, down=down, body=body))
    cfg = Config()
    cfg.set_main_option("script_location", str(folder))
    cfg.set_main_option("sqlalchemy.url", fresh_url.replace("%", "%%"))
    from alembic import command

    command.upgrade(cfg, APP_FIRST)
    return cfg


def _snapshot(engine: Engine, schema: str, tables: tuple[str, ...]) -> dict[str, Any]:
    """Every row (as JSON, in order) and the catalog's description of `tables`."""
    out: dict[str, Any] = {}
    with engine.connect() as conn:
        for t in tables:
            out[t] = conn.execute(text(
                f"SELECT coalesce(string_agg(row_to_json(x)::text, E'\\n' ORDER BY x::text), '') "
                f"FROM {schema}.{t} x")).scalar_one()
        out["columns"] = conn.execute(text(
            "SELECT table_name, column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = :s "
            "ORDER BY table_name, ordinal_position"), {"s": schema}).all()
        # Definitions name the schema; the version table isn't one of `tables`.
        out["indexes"] = [(name, definition.replace(f" {schema}.", " "))
                          for name, definition in conn.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = :s "
            "AND tablename = ANY(:t) ORDER BY indexname"), {"s": schema, "t": list(tables)})]
        out["constraints"] = [(name, definition.replace(f" {schema}.", " "))
                              for name, definition in conn.execute(text(
            "SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = :s "
            "AND c.conrelid::regclass::text = ANY(:qt) ORDER BY conname"),
            {"s": schema, "qt": [f"{schema}.{t}" for t in tables] + list(tables)})]
    return out


def _app_versions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT version_num FROM public.alembic_version")).scalars())


def _autogenerate(engine: Engine, metadata: Any, **opts: Any) -> list[Any]:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn, opts=opts), metadata))


def _app_metadata() -> Any:
    namespace: dict[str, Any] = {}
    header = APP_ENV.split("config = context.config")[0]
    exec(compile(header, "app_env", "exec"), namespace)  # the env's own tables
    return namespace["metadata"]


def test_upgrade_beside_an_application_leaves_it_alone(fresh_url: str, app_alembic: Any) -> None:
    from alembic import command

    from outbox.db.models import Base
    from outbox.migrate import head_revision, skip_outbox_schema

    engine = create_engine(fresh_url, poolclass=pool.NullPool)
    try:
        before = _snapshot(engine, "public", APP_TABLES)
        assert "where is my order?" in before["messages"]

        result = cli("db", "upgrade", env={"OUTBOX_DATABASE_URL": fresh_url})
        assert result.returncode == 0, result.stderr
        assert f"empty -> {head_revision()} (schema outbox)" in result.stdout

        assert _snapshot(engine, "public", APP_TABLES) == before
        assert _app_versions(engine) == [APP_FIRST]
        insp = inspect(engine)
        assert sorted(insp.get_table_names("public")) == sorted(
            (*APP_TABLES, "alembic_version"))
        assert set(insp.get_table_names("outbox")) == {
            t.name for t in Base.metadata.tables.values()} | {"alembic_version"}
        current = cli("db", "current", "--check", env={"OUTBOX_DATABASE_URL": fresh_url})
        assert current.returncode == 0 and current.stdout.startswith(head_revision() or "?")

        # The application's own history still moves, and ours doesn't.
        command.upgrade(app_alembic, "head")
        assert _app_versions(engine) == [APP_SECOND]
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM outbox.alembic_version")
                                ).scalar_one() == head_revision()
            assert "pinned" in {c["name"] for c in inspect(conn).get_columns("messages")}

        # Its autogenerate proposes nothing about our schema: by default it
        # looks at its own schema only; with include_schemas it needs the filter
        # (without it, it would drop our tables: what the filter is for).
        app = _app_metadata()
        assert _autogenerate(engine, app) == []
        assert _autogenerate(engine, app, include_schemas=True,
                             include_name=skip_outbox_schema()) == []
        unfiltered = _autogenerate(engine, app, include_schemas=True)
        assert {d[1].name for d in unfiltered if d[0] == "remove_table"} >= {
            "outbox_messages", "channel_tokens"}
        # And again our upgrade: nothing to do, nothing of theirs touched.
        again = cli("db", "upgrade", env={"OUTBOX_DATABASE_URL": fresh_url})
        assert again.returncode == 0, again.stderr
        assert _app_versions(engine) == [APP_SECOND]
    finally:
        engine.dispose()


def test_enqueue_in_the_applications_session_with_its_own_search_path(
        fresh_url: str, sim, sim_url: str) -> None:
    from outbox import enqueue_text
    from outbox.migrate import upgrade

    upgrade(fresh_url)
    ours = make_engine(fresh_url, pool_size=1)
    # The application keeps its tables in a schema of its own and sets its
    # search_path to it alone: our names resolve only because we qualify them.
    app = create_engine(fresh_url, poolclass=pool.NullPool,
                        connect_args={"options": "-csearch_path=shop"})
    try:
        with ours.begin() as conn:
            conn.execute(text("CREATE SCHEMA shop"))
            conn.execute(text("CREATE TABLE shop.orders (id int PRIMARY KEY, total int)"))
        channel = _channel(ours, sim_url)

        with Session(app) as s, s.begin():
            s.execute(text("INSERT INTO orders VALUES (1, 990)"))
            sent = enqueue_text(s, channel_id=channel, to="+15557654321",
                                body="order 1 shipped")
            assert s.execute(text("SHOW search_path")).scalar_one() == "shop"
        with Session(app) as s:
            s.execute(text("INSERT INTO orders VALUES (2, 10)"))
            enqueue_text(s, channel_id=channel, to="+15557654321", body="never")
            s.rollback()

        with ours.connect() as conn:
            assert conn.execute(text("SELECT id FROM shop.orders")).scalars().all() == [1]
            assert conn.execute(text("SELECT body FROM outbox.messages")).scalars().all() == [
                "order 1 shipped"]
        summary = run_dispatcher_sync(fresh_url)
        assert summary.sent == 1
        assert [r.body for r in sim.sent()] == ["order 1 shipped"]
        with ours.connect() as conn:
            assert conn.execute(text("SELECT status FROM outbox.messages WHERE id = :id"),
                                {"id": sent.message_id}).scalar_one() == "sent"
    finally:
        app.dispose()
        ours.dispose()


def run_dispatcher_sync(url: str) -> Any:
    import asyncio

    return asyncio.run(run_dispatcher(url))


def test_upgrade_moves_an_installation_from_public_keeping_every_row(
        fresh_url: str, sim, sim_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installation as the releases before the schema made it: our tables
    and our revision in public (the same migrations, run with no schema of
    their own), with channels, messages sent and queued, API keys."""
    from outbox import enqueue_text
    from outbox.admin.apikeys import create_api_key
    from outbox.db.models import Base
    from outbox.migrate import current_revision, head_revision, upgrade
    from outbox.settings import get_settings

    upgrade(fresh_url, schema="public")
    monkeypatch.setenv("OUTBOX_DB_SCHEMA", "public")
    get_settings.cache_clear()
    legacy = make_engine(fresh_url, pool_size=1, schema="public")
    try:
        channel = _channel(legacy, sim_url)
        with Session(legacy) as s, s.begin():
            create_api_key(s, workspace_id="default", name="ops")
            for n in range(3):
                enqueue_text(s, channel_id=channel, to=f"+1555765432{n}", body=f"old {n}")
        with legacy.begin() as conn:  # one of them was sent already
            conn.execute(text("UPDATE public.messages SET status = 'sent', "
                              "wa_message_id = 'wa-old-0' WHERE body = 'old 0'"))
            conn.execute(text("DELETE FROM public.outbox_messages WHERE message_id = "
                              "(SELECT id FROM public.messages WHERE body = 'old 0')"))
    finally:
        legacy.dispose()
    monkeypatch.delenv("OUTBOX_DB_SCHEMA")
    get_settings.cache_clear()

    ours = tuple(t.name for t in Base.metadata.tables.values())
    engine = create_engine(fresh_url, poolclass=pool.NullPool)
    try:
        before = _snapshot(engine, "public", ours)
        assert current_revision(fresh_url) == head_revision()  # read from public until moved
        result = cli("db", "upgrade", env={"OUTBOX_DATABASE_URL": fresh_url})
        assert result.returncode == 0, result.stderr

        assert _snapshot(engine, "outbox", ours) == {
            k: v for k, v in before.items()}  # rows, columns, indexes, constraints
        insp = inspect(engine)
        assert insp.get_table_names("public") == []  # our alembic_version went too
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM outbox.alembic_version")
                                ).scalar_one() == head_revision()
    finally:
        engine.dispose()
    summary = run_dispatcher_sync(fresh_url)
    assert summary.sent == 2
    assert sorted(r.body for r in sim.sent()) == ["old 1", "old 2"]


# --- least privilege -----------------------------------------------------------------


@pytest.fixture
def roles(fresh_url: str) -> Iterator[dict[str, str]]:
    """A migration role owning the schema the DBA made for it, a service role
    and an application role, each able to log in to the fresh database."""
    suffix = secrets.token_hex(3)
    names = {k: f"outbox_{k}_{suffix}" for k in ("owner", "service", "app")}
    admin = libpq_url(fresh_url)
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names.values():
            conn.execute(f'CREATE ROLE "{name}" LOGIN')
        conn.execute(f'CREATE SCHEMA outbox AUTHORIZATION "{names["owner"]}"')
        conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        conn.execute("CREATE TABLE public.orders (id int PRIMARY KEY)")
        conn.execute(f'GRANT SELECT, INSERT ON public.orders TO "{names["app"]}"')
    try:
        yield {k: make_url(fresh_url).set(username=v).render_as_string(hide_password=False)
               for k, v in names.items()} | {f"{k}_name": v for k, v in names.items()}
    finally:
        drop_database(_server_url(), make_url(fresh_url).database or "")
        with psycopg.connect(libpq_url(_server_url()), autocommit=True) as conn:
            for name in names.values():
                conn.execute(f'DROP ROLE IF EXISTS "{name}"')


def test_enqueue_and_dispatch_under_least_privilege_roles(
        roles: dict[str, str], sim, sim_url: str) -> None:
    from outbox import enqueue_text

    upgrade = cli("db", "upgrade", env={"OUTBOX_DATABASE_URL": roles["owner"]})
    assert upgrade.returncode == 0, upgrade.stderr
    grants = cli("db", "grants", "--service-role", roles["service_name"], "--app-role",
                 roles["app_name"], "--owner-role", roles["owner_name"])
    assert grants.returncode == 0, grants.stderr
    with psycopg.connect(libpq_url(roles["owner"]), autocommit=True) as conn:
        for statement in grants.stdout.splitlines():
            conn.execute(statement)  # type: ignore[arg-type]

    service = make_engine(roles["service"], pool_size=1)
    app = create_engine(roles["app"], poolclass=pool.NullPool)
    try:
        channel = _channel(service, sim_url)
        with Session(app) as s, s.begin():
            s.execute(text("INSERT INTO orders VALUES (7)"))
            enqueue_text(s, channel_id=channel, to="+15557654321", body="order 7")
            enqueue_text(s, channel_id=channel, to="+15557654321", body="order 7",
                         idempotency_key="o7")
            enqueue_text(s, channel_id=channel, to="+15557654321", body="order 7",
                         idempotency_key="o7")
        # The application's role sees no token and can't touch the queue.
        for forbidden in ("SELECT * FROM outbox.channel_tokens",
                          "SELECT * FROM outbox.api_keys",
                          "UPDATE outbox.outbox_messages SET attempts = 0",
                          "DELETE FROM outbox.messages",
                          "DROP TABLE outbox.messages"):
            with app.connect() as conn, pytest.raises(Exception) as denied:
                conn.execute(text(forbidden))
            assert "permission denied" in str(denied.value) or "must be owner" in str(
                denied.value), forbidden
        summary = run_dispatcher_sync(roles["service"])
        assert summary.sent == 2 and summary.failed == 0
        assert sorted(r.body for r in sim.sent()) == ["order 7", "order 7"]
        # The service role reads and writes rows but can't change the schema.
        with service.connect() as conn, pytest.raises(Exception, match="must be owner"):
            conn.execute(text("ALTER TABLE outbox.messages ADD COLUMN x int"))
    finally:
        app.dispose()
        service.dispose()


def test_grants_command_needs_a_role_and_quotes_names() -> None:
    result = cli("db", "grants")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0
    assert "--service-role" in result.stderr
    odd = cli("db", "grants", "--app-role", 'we"ird')
    assert odd.returncode == 0 and 'TO "we""ird";' in odd.stdout


def test_a_schema_name_that_is_not_plain_is_refused_in_one_line() -> None:
    result = cli("db", "upgrade", env={"OUTBOX_DB_SCHEMA": "Out; DROP"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: OUTBOX_DB_SCHEMA:")
    assert "Traceback" not in result.stderr


def test_another_schema_name_holds_everything(fresh_url: str, sim, sim_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """OUTBOX_DB_SCHEMA=wa: the same statements run with that schema, and
    nothing lands in `outbox` or `public`."""
    from outbox import enqueue_text
    from outbox.settings import get_settings

    monkeypatch.setenv("OUTBOX_DB_SCHEMA", "wa")
    get_settings.cache_clear()
    result = cli("db", "upgrade", env={"OUTBOX_DATABASE_URL": fresh_url})
    assert result.returncode == 0, result.stderr
    engine = make_engine(fresh_url, pool_size=1)
    try:
        channel = _channel(engine, sim_url)
        with Session(engine) as s, s.begin():
            enqueue_text(s, channel_id=channel, to="+15557654321", body="in wa")
        sent = cli("dispatch", "--once", "--no-progress",
                   env={"OUTBOX_DATABASE_URL": fresh_url})
        assert sent.returncode == 0, sent.stderr
        assert [r.body for r in sim.sent()] == ["in wa"]
        insp = inspect(engine)
        assert "outbox" not in insp.get_schema_names()
        assert insp.get_table_names("public") == []
        assert "outbox_messages" in insp.get_table_names("wa")
        status = cli("status", env={"OUTBOX_DATABASE_URL": fresh_url})
        assert status.returncode == 0, status.stderr
    finally:
        engine.dispose()
