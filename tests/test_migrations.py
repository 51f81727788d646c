"""Migrations on a fresh database of their own: up, down to nothing, up again;
and the models (db/models.py) describe exactly what the migrations create."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, pool, text
from sqlalchemy.exc import IntegrityError

pytestmark = pytest.mark.slow  # migrations up and down on fresh databases


def _schema(url: str) -> tuple[set[str], dict[str, list[str]]]:
    """Tables in our schema (besides alembic_version) and, per table, its index names."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        insp = inspect(engine)
        tables = set(insp.get_table_names("outbox")) - {"alembic_version"}
        indexes = {t: sorted(i["name"] or "" for i in insp.get_indexes(t, "outbox"))
                   for t in tables}
        return tables, indexes
    finally:
        engine.dispose()


def _leftovers(url: str) -> list[str]:
    """Anything user-made still in the public schema: tables, sequences, views, types."""
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT c.relkind::text || ':' || c.relname FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relname <> 'alembic_version' "
                "AND c.relname NOT LIKE 'alembic_version%' "
                "UNION ALL SELECT 't:' || t.typname::text FROM pg_type t "
                "JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd')")).scalars())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(fresh_database_url: str) -> None:
    from outbox.db.models import Base
    from outbox.migrate import current_revision, downgrade, head_revision, upgrade

    url = fresh_database_url
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == head_revision()
    tables, indexes = _schema(url)
    assert tables == {t.name for t in Base.metadata.tables.values()}
    assert _leftovers(url) == []  # nothing of ours in public, not even a version table

    downgrade(url, "base")
    assert current_revision(url) is None
    assert _schema(url)[0] == set()
    assert _leftovers(url) == []

    upgrade(url)
    assert current_revision(url) == head_revision()
    assert _schema(url) == (tables, indexes)


def test_models_match_migrations(fresh_database_url: str) -> None:
    """Alembic's autogenerate finds nothing to add, drop or alter."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from outbox.db.models import Base
    from outbox.migrate import upgrade

    def include_name(name: str | None, type_: str, _: object) -> bool:
        """Our schema, without its version table (as migrations/env.py)."""
        return name == "outbox" if type_ == "schema" else name != "alembic_version"

    upgrade(fresh_database_url)
    engine = create_engine(fresh_database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={
                "compare_type": True, "compare_server_default": True, "include_schemas": True,
                "include_name": include_name})
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], "models and migrations disagree:\n" + "\n".join(map(repr, diff))


def _seed_channel(conn: Any) -> Any:
    return conn.execute(text(
        "INSERT INTO outbox.channels (workspace_id, name, phone_number, webhook_secret) "
        "VALUES ('w', 'c', '+15550000001', 's') RETURNING id")).scalar_one()


def _seed_chat(conn: Any, ch: Any, phone: str, wa: str, *, unread: int = 0,
               at: str = "2026-01-01", outbox_status: str = "queued") -> Any:
    """A chat (and its contact) on channel `ch` with one message and its outbox row."""
    contact = conn.execute(text(
        "INSERT INTO outbox.contacts (workspace_id, phone) VALUES ('w', :p) "
        "ON CONFLICT (workspace_id, phone) DO UPDATE SET phone = EXCLUDED.phone "
        "RETURNING id"), {"p": phone}).scalar_one()
    chat_id = conn.execute(text(
        "INSERT INTO outbox.chats (workspace_id, channel_id, wa_chat_id, contact_id, "
        "unread_count, last_message_at, last_message_preview) VALUES "
        "('w', :ch, :wa, :ct, :u, CAST(:at AS timestamptz), :wa) RETURNING id"),
        {"ch": ch, "wa": wa, "ct": contact, "u": unread, "at": at}).scalar_one()
    mid = conn.execute(text(
        "INSERT INTO outbox.messages (workspace_id, channel_id, chat_id, direction, "
        "type, status) VALUES ('w', :ch, :chat, 'outbound', 'text', 'pending') "
        "RETURNING id"), {"ch": ch, "chat": chat_id}).scalar_one()
    conn.execute(text(
        "INSERT INTO outbox.outbox_messages (workspace_id, message_id, channel_id, "
        "chat_id, recipient, message_type, payload, status) "
        "VALUES ('w', :m, :ch, :chat, :wa, 'text', '{}', :status)"),
        {"m": mid, "ch": ch, "chat": chat_id, "wa": wa, "status": outbox_status})
    return chat_id


def test_stored_chat_ids_become_canonical(fresh_database_url: str) -> None:
    """0005: what was stored under the old chat-id forms (Mexico 52..., a
    Brazilian reply's second contact and chat) is rewritten and merged so a
    person has one contact and one chat, and queued rows go where Whapi
    delivers."""
    from outbox.migrate import upgrade

    url = fresh_database_url
    upgrade(url, "0004")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            ch = _seed_channel(conn)

            def chat(phone: str, wa: str, unread: int, at: str) -> Any:
                return _seed_chat(conn, ch, phone, wa, unread=unread, at=at)

            mexico = chat("+525512345678", "525512345678@s.whatsapp.net", 0, "2026-01-01")
            # Our send to a Brazilian mobile (area 31: Whapi drops the 9) and
            # the reply, which opened a second contact and chat.
            chat("+5531987654321", "5531987654321@s.whatsapp.net", 0, "2026-01-01")
            reply = chat("+553187654321", "553187654321@s.whatsapp.net", 2, "2026-01-02")
            untouched = chat("+447700900123", "447700900123@s.whatsapp.net", 1, "2026-01-01")

        upgrade(url)

        with engine.connect() as conn:
            chats = {r.id: r for r in conn.execute(text(
                "SELECT c.id, c.wa_chat_id, c.unread_count, c.last_message_preview, ct.phone "
                "FROM outbox.chats c JOIN outbox.contacts ct ON ct.id = c.contact_id"))}
            contacts = sorted(conn.execute(text("SELECT phone FROM outbox.contacts")).scalars())
            recipients = {r.chat_id: r.recipient for r in conn.execute(text(
                "SELECT chat_id, recipient FROM outbox.outbox_messages"))}
            per_chat = dict(conn.execute(text(  # type: ignore[arg-type]
                "SELECT chat_id, count(*) FROM outbox.messages GROUP BY chat_id")).all())
    finally:
        engine.dispose()
    assert set(chats) == {mexico, reply, untouched}
    assert (chats[mexico].wa_chat_id, chats[mexico].phone) == (
        "5215512345678@s.whatsapp.net", "+525512345678")
    assert (chats[reply].wa_chat_id, chats[reply].phone, chats[reply].unread_count) == (
        "553187654321@s.whatsapp.net", "+5531987654321", 2)
    assert chats[reply].last_message_preview == "553187654321@s.whatsapp.net"  # the newer
    assert contacts == ["+447700900123", "+525512345678", "+5531987654321"]
    assert recipients == {mexico: "5215512345678@s.whatsapp.net",
                          reply: "553187654321@s.whatsapp.net",
                          untouched: "447700900123@s.whatsapp.net"}
    assert per_chat == {mexico: 1, reply: 2, untouched: 1}


def _one_line_failure(proc: Any, *must: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for text_ in must:
        assert text_ in lines[0], lines[0]
    return str(lines[0])


def test_another_alembic_history_is_not_ours_and_stays_as_it_was(
        fresh_database_url: str) -> None:
    """(tests/test_app_database.py runs a whole application's history beside ours.)"""
    from tests.dispatch_helpers import cli

    url = fresh_database_url
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
            conn.execute(text("INSERT INTO alembic_version VALUES ('a1b2c3d4e5f6')"))
            conn.execute(text("CREATE TABLE orders (id int PRIMARY KEY)"))
        current = cli("db", "current", env={"OUTBOX_DATABASE_URL": url})
        assert current.returncode == 0 and current.stdout.startswith("empty"), current.stdout
        result = cli("db", "upgrade", env={"OUTBOX_DATABASE_URL": url})
        assert result.returncode == 0, result.stderr
        with engine.connect() as conn:
            assert list(conn.execute(text("SELECT version_num FROM public.alembic_version"))) == [
                ("a1b2c3d4e5f6",)]
            assert sorted(inspect(conn).get_table_names()) == ["alembic_version", "orders"]
    finally:
        engine.dispose()


def test_upgrade_colliding_with_a_table_changes_nothing_and_says_so(
        fresh_database_url: str) -> None:
    """A schema named like ours that holds someone else's tables."""
    from tests.dispatch_helpers import cli

    url = fresh_database_url
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE SCHEMA outbox"))
            conn.execute(text("CREATE TABLE outbox.channels (id int PRIMARY KEY, app_data text)"))
            conn.execute(text("INSERT INTO outbox.channels VALUES (1, 'theirs')"))
        _one_line_failure(cli("db", "upgrade", env={"OUTBOX_DATABASE_URL": url}),
                          "nothing was changed", "channels", "OUTBOX_DB_SCHEMA")
        with engine.connect() as conn:
            assert sorted(inspect(conn).get_table_names("outbox")) == ["channels"]
            assert list(conn.execute(text("SELECT * FROM outbox.channels"))) == [(1, "theirs")]
    finally:
        engine.dispose()


def test_unreachable_database_and_unknown_revision_are_one_line(
        fresh_database_url: str) -> None:
    from tests.dispatch_helpers import cli
    from tests.sim_fixtures import unused_port

    dead = f"postgresql://outbox:s3cret@127.0.0.1:{unused_port()}/nowhere"
    for command in (("db", "upgrade"), ("db", "current")):
        line = _one_line_failure(cli(*command, env={"OUTBOX_DATABASE_URL": dead}),
                                 "cannot reach database")
        assert "s3cret" not in line
    _one_line_failure(cli("db", "upgrade", "ffff", env={"OUTBOX_DATABASE_URL":
                                                        fresh_database_url}), "ffff")


def _check_values(conn: Any) -> dict[tuple[str, str], list[str]]:
    """(table, column) -> the values each CHECK constraint of ours allows, as migrated."""
    import re

    out: dict[tuple[str, str], list[str]] = {}
    for table, definition in conn.execute(text(
            "SELECT t.relname, pg_get_constraintdef(c.oid) FROM pg_constraint c "
            "JOIN pg_class t ON t.oid = c.conrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE n.nspname = 'outbox' AND c.contype = 'c'")):
        column = (re.search(r"\((\w+) = ANY", definition)
                  or re.search(r"\((\w+) <@ ARRAY", definition))
        if column is None:  # not a list of values (e.g. email = lower(email))
            continue
        out[(table, column[1])] = re.findall(r"'([^']*)'::text", definition)
    return out


def test_migrated_check_constraints_are_the_states(fresh_database_url: str) -> None:
    """Autogenerate doesn't compare CHECK constraints: what the migrations
    leave allows exactly the values of outbox.states, and 0006 undoes cleanly."""
    from outbox.migrate import downgrade, upgrade
    from tests.test_states import CONSTRAINED

    url = fresh_database_url
    upgrade(url)
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            assert _check_values(conn) == {key: [s.value for s in enum]
                                           for key, enum in CONSTRAINED.items()}
        downgrade(url, "0005")
        with engine.connect() as conn:
            assert _check_values(conn)[("outbox_messages", "status")] == [
                "queued", "sending", "sent", "failed", "paused"]
    finally:
        engine.dispose()


def test_a_paused_outbox_row_goes_back_to_the_queue(fresh_database_url: str) -> None:
    """0006: no code wrote the outbox status `paused`; a row holding it
    anyway is queued again (where the claim finds it) before it is refused."""
    from outbox.migrate import upgrade

    url = fresh_database_url
    upgrade(url, "0005")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            ch = _seed_channel(conn)
            _seed_chat(conn, ch, "+15550000002", "15550000002@s.whatsapp.net",
                       outbox_status="paused")
            _seed_chat(conn, ch, "+15550000003", "15550000003@s.whatsapp.net",
                       outbox_status="sent")

        upgrade(url)

        with engine.connect() as conn:
            statuses = sorted(conn.execute(text(
                "SELECT status FROM outbox.outbox_messages")).scalars())
            assert statuses == ["queued", "sent"]
            with pytest.raises(IntegrityError, match="ck_outbox_messages_status"):
                conn.execute(text("UPDATE outbox.outbox_messages SET status = 'paused'"))
    finally:
        engine.dispose()


def test_the_queue_table_keeps_room_for_hot_updates(database_url: str) -> None:
    """0014: fillfactor 70 on outbox_messages (the model can't carry it)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            options = conn.execute(text(
                "SELECT reloptions FROM pg_class WHERE oid = 'outbox.outbox_messages'::regclass"
            )).scalar_one()
    finally:
        engine.dispose()
    assert "fillfactor=70" in options



# --- a busy database ---------------------------------------------------------------

WRITERS_LOCK = "ROW EXCLUSIVE"  # what INSERT, UPDATE and DELETE take on a table
BUSY_TABLES = ("messages", "outbox_messages", "chats", "contacts")


@pytest.mark.parametrize(("start", "target", "written"), [
    ("0009", "0008", "messages"), ("0008", "0013", "outbox_messages")])
def test_index_builds_on_big_tables_let_writes_through(fresh_database_url: str, start: str,
                                                       target: str, written: str) -> None:
    """While a revision that builds indexes waits for a transaction that has
    written to the table (as any index build must), new writes to our tables
    still go: CREATE INDEX CONCURRENTLY takes a lock writers don't wait for.
    (A plain CREATE INDEX in the upgrade's transaction queues a SHARE lock,
    every writer queues behind it, and the tables it already indexed stay
    SHARE-locked to the commit.)"""
    import threading

    import psycopg

    from outbox.db.conninfo import libpq_url
    from outbox.migrate import current_revision, upgrade

    url = fresh_database_url
    upgrade(url, start)
    conninfo = libpq_url(url)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            upgrade(url, target)
        except BaseException as exc:  # reported below
            failure.append(exc)

    blocked = []
    with psycopg.connect(conninfo) as writer, psycopg.connect(conninfo, autocommit=True) as probe:
        writer.execute(f"LOCK TABLE outbox.{written} IN {WRITERS_LOCK} MODE")
        migration = threading.Thread(target=run, daemon=True)
        migration.start()
        waiting = False
        for _ in range(300):  # until the upgrade waits for the open writer
            waiting = bool(probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()").fetchone()[0])  # type: ignore[index]
            if waiting or not migration.is_alive():
                break
            threading.Event().wait(0.1)
        assert waiting, f"the upgrade never waited for the open writer: {failure}"
        # (lock_timeout for the session: a SET in a transaction ends with it)
        with psycopg.connect(conninfo, options="-c lock_timeout=2s") as other:
            for table in BUSY_TABLES:
                try:
                    other.execute(f"LOCK TABLE outbox.{table} IN {WRITERS_LOCK} MODE")
                except psycopg.errors.LockNotAvailable:
                    blocked.append(table)
                other.rollback()
        writer.rollback()
        migration.join(timeout=120)
    assert not failure, failure
    assert current_revision(url) == target
    assert blocked == [], f"writes to {blocked} waited for the upgrade {start} -> {target}"


def test_a_failure_after_a_concurrent_build_says_what_is_committed_and_resumes(
        fresh_database_url: str) -> None:
    """Past 0008 and 0013 (their blocks commit what came before), a later
    revision fails: the line names the revision the database is at, not
    "nothing was changed", and the same command, run again, finishes."""
    from outbox.migrate import current_revision, head_revision, upgrade
    from tests.dispatch_helpers import cli

    url = fresh_database_url
    upgrade(url, "0009")
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:  # 0010 creates this table
            conn.execute(text("CREATE TABLE outbox.events (id int)"))
        line = _one_line_failure(cli("db", "upgrade", env={"OUTBOX_DATABASE_URL": url}),
                                 "failed after revision 0008, which is committed", "events")
        assert "nothing was changed" not in line
        assert current_revision(url) == "0008"
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE outbox.events"))
    finally:
        engine.dispose()
    result = cli("db", "upgrade", env={"OUTBOX_DATABASE_URL": url})
    assert result.returncode == 0, result.stderr
    assert current_revision(url) == head_revision()
