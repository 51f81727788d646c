"""The fixture every database test starts from: `truncate` empties the
tables it is given and those that refer to them, and restarts their
identities, while it truncates only the tables that need it."""

from __future__ import annotations

from sqlalchemy import Engine, text

from tests.conftest import TABLES, truncate

BACKLOG = ("INSERT INTO outbox.webhook_status_backlog (channel_id, wa_message_id, status) "
           "VALUES (:c, 'wa-1', 'sent') RETURNING id")


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM outbox.{table}")).scalar_one())


def test_rows_go_with_the_tables_that_refer_to_them(clean_db: Engine, make_channel) -> None:
    channel = make_channel()
    with clean_db.begin() as conn:
        conn.execute(text(BACKLOG), {"c": channel})
    truncate(clean_db, TABLES)  # the backlog is not in TABLES: it refers to channels
    assert _count(clean_db, "channels") == 0
    assert _count(clean_db, "webhook_status_backlog") == 0


def test_an_empty_table_whose_identity_moved_starts_again_at_one(
        clean_db: Engine, make_channel) -> None:
    channel = make_channel()
    with clean_db.begin() as conn:
        assert conn.execute(text(BACKLOG), {"c": channel}).scalar_one() == 1
        conn.execute(text("DELETE FROM outbox.channels"))  # the backlog row goes with it
    assert _count(clean_db, "webhook_status_backlog") == 0  # empty, its identity at 1
    truncate(clean_db, TABLES)
    channel = make_channel()
    with clean_db.begin() as conn:
        assert conn.execute(text(BACKLOG), {"c": channel}).scalar_one() == 1
