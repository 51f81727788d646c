"""The dispatcher behind PgBouncer in transaction mode (OUTBOX_DB_POOLER=transaction).

A real PgBouncer (Debian's package, installed here if missing and we are
root) runs on a free loopback port in front of the test database with
pool_mode=transaction and fewer server connections than we open, so our
client connections share server connections the way they do in production.
`dispatch --once` and the daemon run as processes through it: every message
goes out once, nothing is logged at warning or above, and the daemon is woken
by polling, or by NOTIFY when OUTBOX_LISTEN_DATABASE_URL points past the pooler.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, make_url, text
from sqlalchemy.orm import Session

from outbox import enqueue_text
from tests.dispatch_helpers import REPO, cli, enqueue_spread, outbox_counts, sent_by_body

pytestmark = pytest.mark.slow  # PgBouncer processes

PGBOUNCER_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
# Fewer server connections than a dispatcher opens (its pool, a claiming
# and a completing connection): transactions of different clients share them.
SERVER_POOL_SIZE = 4
STARTUP_TIMEOUT_SECONDS = 15.0
# Log lines at these levels fail a run that should be clean (console or JSON logs).
_BAD_LINE = re.compile(r"\[(warning|error|critical)\s*\]|\"level\":\s*\"(warning|error|critical)\"|"
                       r"Traceback|prepared statement", re.IGNORECASE)


def start_daemon(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "outbox", "run"], cwd=REPO, text=True,
        env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


def wait_for(predicate, timeout: float, interval: float = 0.1) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(interval)

_PREPARED_STATEMENT_ERROR = re.compile(
    r"prepared statement|InvalidSqlStatementName|DuplicatePreparedStatement|SQLSTATE (26000|42P05)")


def _find_pgbouncer() -> str | None:
    found = shutil.which("pgbouncer")
    return found or next((p for p in PGBOUNCER_PATHS if Path(p).exists()), None)


@pytest.fixture(scope="session")
def pgbouncer_binary() -> str:
    """Debian's pgbouncer, installed with apt-get when missing (as root only)."""
    found = _find_pgbouncer()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        _unavailable("pgbouncer is not installed, and installing it needs apt-get as root "
                     "(apt-get install pgbouncer)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "pgbouncer"]
    result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:  # stale package lists: refresh once and retry
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        result = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    found = _find_pgbouncer()
    if result.returncode != 0 or not found:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        _unavailable(f"apt-get install pgbouncer failed: {last}")
    assert found is not None
    return found


def _unavailable(reason: str) -> None:
    # CI must run these tests: there a missing pgbouncer is a failure, not a skip.
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pgbouncer_url(pgbouncer_binary: str, database_url: str) -> Iterator[str]:
    """The test database through PgBouncer in transaction mode (a SQLAlchemy URL).
    For this module only: its idle server connections keep the last client's
    application_name ("outbox-dispatcher"), which later tests count."""
    with _pgbouncer(pgbouncer_binary, database_url) as url:
        yield url


@contextmanager
def _pgbouncer(pgbouncer_binary: str, database_url: str) -> Iterator[str]:
    server = make_url(database_url)
    user = server.username or "postgres"
    port = _free_port()
    # pgbouncer refuses to run as root: as root it switches to `postgres`
    # (the Debian package's user), which must be able to read its files.
    workdir = Path(tempfile.mkdtemp(prefix="outbox-pgbouncer-"))
    workdir.chmod(0o755)
    target = " ".join(f"{k}={v}" for k, v in {
        "host": server.host or "127.0.0.1", "port": server.port or 5432,
        "dbname": server.database, "user": user, "password": server.password}.items() if v)
    (workdir / "userlist.txt").write_text(f'"{user}" ""\n')
    (workdir / "pgbouncer.ini").write_text(f"""\
[databases]
{server.database} = {target}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir / "userlist.txt"}
pool_mode = transaction
default_pool_size = {SERVER_POOL_SIZE}
max_client_conn = 500
""")
    for f in workdir.iterdir():
        f.chmod(0o644)
    command = [pgbouncer_binary, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]
    # Its log goes to a file we opened (a pipe nobody reads would fill and stall it).
    with open(workdir / "pgbouncer.log", "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = server.set(port=port, host="127.0.0.1", password=None).render_as_string(
        hide_password=False)
    try:
        _wait_until_accepting(url, proc, workdir)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_until_accepting(url: str, proc: subprocess.Popen[str], workdir: Path) -> None:
    from outbox.db.conninfo import libpq_url

    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while True:
        if proc.poll() is not None:
            log = (workdir / "pgbouncer.log").read_text()
            raise AssertionError(f"pgbouncer exited ({proc.returncode}): {log}")
        try:
            with psycopg.connect(libpq_url(url), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _through_pooler(url: str, *, pooler: bool = True, **extra: str) -> dict[str, str]:
    env = {"OUTBOX_DATABASE_URL": url, **extra}
    if pooler:
        env["OUTBOX_DB_POOLER"] = "transaction"
    return env


def _bad_lines(output: str) -> list[str]:
    # Not the analyzer's word on the server's own configuration (some test
    # servers run with autovacuum = off): true, and not about the pooler.
    return [line for line in output.splitlines()
            if _BAD_LINE.search(line) and '"kind": "autovacuum_off"' not in line]


def _sent_once(sim, expected: int) -> None:  # type: ignore[no-untyped-def]
    by_body = sent_by_body(sim)
    duplicates = sum(len(v) - 1 for v in by_body.values())
    assert (len(by_body), duplicates) == (expected, 0)


# --- the mechanism: no server-side prepared statements -----------------------------


def test_direct_connection_prepares_nothing_under_a_transaction_pooler(database_url: str):
    from outbox.db.conninfo import libpq_url
    from outbox.db.direct import DirectConnection

    async def prepared_after_repeats(pooler: str) -> int:
        conn = DirectConnection(libpq_url(database_url), application_name="t",
                                pooler=pooler)  # type: ignore[arg-type]
        try:
            for n in range(10):  # psycopg prepares after the fifth run
                await conn.fetchone("SELECT %(n)s::int + 1", {"n": n})
            row = await conn.fetchone("SELECT count(*) FROM pg_prepared_statements", {})
            assert row is not None
            return int(row[0])
        finally:
            await conn.aclose()

    assert asyncio.run(prepared_after_repeats("none")) >= 1  # the test can see a preparation
    assert asyncio.run(prepared_after_repeats("transaction")) == 0


def test_engines_prepare_nothing_under_a_transaction_pooler(database_url: str):
    from outbox.database import make_engine
    from outbox.db.engine import engine_pooler

    def prepared_after_repeats(pooler: str) -> int:
        engine = make_engine(database_url, pool_size=1, pooler=pooler)  # type: ignore[arg-type]
        try:
            assert engine_pooler(engine) == pooler
            with engine.connect() as conn:
                for n in range(10):
                    conn.execute(text("SELECT CAST(:n AS int) + 1"), {"n": n})
                return int(conn.execute(text("SELECT count(*) FROM pg_prepared_statements"))
                           .scalar_one())
        finally:
            engine.dispose()

    assert prepared_after_repeats("none") >= 1
    assert prepared_after_repeats("transaction") == 0


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                database_url: str):
    from outbox.database import make_async_engine
    from outbox.db.engine import engine_pooler
    from outbox.errors import ConfigurationError
    from outbox.settings import load_settings

    monkeypatch.setenv("OUTBOX_DB_POOLER", "Transaction")
    engine = make_async_engine(database_url, pool_size=1)
    assert engine_pooler(engine) == "transaction"
    monkeypatch.setenv("OUTBOX_DB_POOLER", "statement")  # PgBouncer's mode without transactions
    with pytest.raises(ConfigurationError, match="OUTBOX_DB_POOLER"):
        load_settings()


def test_where_the_daemon_listens():
    from outbox.database import listen_url
    from outbox.errors import ConfigurationError
    from outbox.settings import Settings

    pooled = "postgresql://app@pooler:6543/app"
    direct = "postgres://app@db:5432/app"
    assert listen_url(Settings(database_url=pooled)) == "postgresql://app@pooler:6543/app"
    assert listen_url(Settings(database_url=pooled, db_pooler="session")) is not None
    assert listen_url(Settings(database_url=pooled, db_pooler="transaction")) is None
    assert listen_url(Settings(database_url=pooled, db_pooler="transaction",
                               listen_database_url=direct)) == "postgresql://app@db:5432/app"
    with pytest.raises(ConfigurationError, match=r"^OUTBOX_LISTEN_DATABASE_URL: only PostgreSQL"):
        listen_url(Settings(database_url=pooled, listen_database_url="mysql://app@db/app"))


# --- dispatch --once through PgBouncer -------------------------------------------


def test_dispatch_once_through_pgbouncer_sends_each_message_once(
        make_channel, clean_db: Engine, sim, sim_url, pgbouncer_url: str):
    channels = [make_channel(name=f"c{i}", base_url=sim_url) for i in range(3)]
    enqueue_spread(clean_db, channels, messages=600, chats=120)
    sim.set_faults(latency_ms=2, latency_jitter_ms=3)
    started = time.monotonic()
    result = cli("dispatch", "--once", "--no-progress", env=_through_pooler(pgbouncer_url))
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert _bad_lines(output) == [], output
    _sent_once(sim, 600)
    assert outbox_counts(clean_db) == {"sent": 600}
    print(f"\ndispatch --once through pgbouncer: 600 sent once in {elapsed:.1f} s, "
          "no warnings")


def test_without_the_setting_pgbouncer_breaks_prepared_statements(pgbouncer_url: str):
    """What the setting fixes: psycopg prepares a statement (after its fifth
    run) on the server connection PgBouncer lent it; the next client lent
    that server connection prepares under the same name, or a client runs its
    statement on a server that never saw it. Two clients taking turns show it
    whenever PgBouncer lends them the same server connections (a whole
    dispatcher run shows it only when its queries happen to interleave)."""
    from outbox.db.conninfo import libpq_url, psycopg_connect_args

    def alternate(**connect_args: object) -> tuple[set[int], set[int]]:
        """The server backends each client's statements ran on."""
        url = libpq_url(pgbouncer_url)
        seen: tuple[set[int], set[int]] = (set(), set())
        with psycopg.connect(url, autocommit=True, **connect_args) as a, \
                psycopg.connect(url, autocommit=True, **connect_args) as b:
            for n in range(10):
                for client, pids, sql in ((a, seen[0], "SELECT %s::int + 1, pg_backend_pid()"),
                                          (b, seen[1], "SELECT %s::int * 2, pg_backend_pid()")):
                    row = client.execute(sql, (n,)).fetchone()
                    assert row is not None
                    pids.add(row[1])
        return seen

    with_setting = alternate(**psycopg_connect_args("transaction"))  # never an error
    if not with_setting[0] & with_setting[1]:
        pytest.skip("this PgBouncer lent the two clients different server connections, "
                    "so their prepared statements can't meet")
    with pytest.raises(psycopg.DatabaseError) as failure:
        alternate()  # psycopg's defaults: what OUTBOX_DB_POOLER=none leaves
    assert _PREPARED_STATEMENT_ERROR.search(f"{type(failure.value).__name__} {failure.value}")


# --- the daemon through PgBouncer --------------------------------------------------


def _stop(daemon: subprocess.Popen[str]) -> str:
    daemon.send_signal(signal.SIGTERM)
    out, _ = daemon.communicate(timeout=60)
    assert daemon.returncode == 0, out
    return out


def _enqueue_one_and_time(engine: Engine, channel, sim, *, body: str,  # type: ignore[no-untyped-def]
                          before: int, timeout: float) -> float:
    started = time.monotonic()
    with Session(engine) as s, s.begin():
        enqueue_text(s, channel_id=channel, to="+15550100001", body=body)
    wait_for(lambda: sim.stats().accepted == before + 1, timeout=timeout, interval=0.02)
    return time.monotonic() - started


def test_daemon_through_pgbouncer_polls_and_sends_each_message_once(
        make_channel, clean_db: Engine, sim, sim_url, pgbouncer_url: str):
    from outbox.database import make_engine

    channels = [make_channel(name=f"c{i}", base_url=sim_url) for i in range(3)]
    enqueue_spread(clean_db, channels, messages=600, chats=120)
    sim.set_faults(latency_ms=2, latency_jitter_ms=3)
    # The application enqueues through the pooler too.
    app_engine = make_engine(pgbouncer_url, pool_size=2, pooler="transaction")
    started = time.monotonic()
    daemon = start_daemon(_through_pooler(pgbouncer_url, OUTBOX_POLL_INTERVAL_SECONDS="1"))
    try:
        wait_for(lambda: sim.stats().accepted >= 600, timeout=60)
        drained = time.monotonic() - started
        time.sleep(1.5)  # idle: the next message waits for a tick
        latency = _enqueue_one_and_time(app_engine, channels[0], sim, body="by polling",
                                        before=600, timeout=10)
    finally:
        out = _stop(daemon)
        app_engine.dispose()
    assert "wakeups_by_polling" in out
    assert _bad_lines(out) == [], out
    _sent_once(sim, 601)
    assert outbox_counts(clean_db) == {"sent": 601}
    assert latency < 3.0  # one poll interval, plus a send
    print(f"\ndaemon through pgbouncer, polling: 600 sent once in {drained:.1f} s "
          f"(from start), next message out {latency:.2f} s after commit")


def test_daemon_through_pgbouncer_wakes_on_notify_from_a_direct_listen(
        make_channel, clean_db: Engine, sim, sim_url, pgbouncer_url: str, database_url: str):
    from outbox.database import make_engine

    channels = [make_channel(name=f"c{i}", base_url=sim_url) for i in range(2)]
    enqueue_spread(clean_db, channels, messages=300, chats=60)
    app_engine = make_engine(pgbouncer_url, pool_size=2, pooler="transaction")
    # A poll interval far longer than the waits below: only NOTIFY explains a fast send.
    daemon = start_daemon(_through_pooler(
        pgbouncer_url, OUTBOX_LISTEN_DATABASE_URL=database_url,
        OUTBOX_POLL_INTERVAL_SECONDS="60"))
    try:
        wait_for(lambda: sim.stats().accepted >= 300, timeout=60)  # the first tick
        time.sleep(1.0)
        try:
            latencies = [_enqueue_one_and_time(app_engine, channels[0], sim, body=f"wake {n}",
                                               before=300 + n, timeout=15) for n in range(3)]
        except AssertionError:
            raise AssertionError("not woken; the daemon said:\n" + _stop(daemon)) from None
    finally:
        out = _stop(daemon)
        app_engine.dispose()
    assert "wakeups_by_notify" in out and "wakeups_by_polling" not in out
    assert _bad_lines(out) == [], out
    _sent_once(sim, 303)
    assert max(latencies) < 5.0
    print(f"\ndaemon through pgbouncer, LISTEN direct: 300 sent once; woken messages out "
          f"{', '.join(f'{x:.2f}' for x in latencies)} s after commit")


# --- migrations ----------------------------------------------------------------------


def test_upgrade_through_the_pooler_builds_indexes_concurrently_in_our_schema(
        pgbouncer_binary: str, fresh_database_url: str) -> None:
    """0008 and 0013 build indexes CONCURRENTLY between transactions
    (migrations/online.py): through the pooler each transaction may get
    another server connection, and our search_path, set per transaction,
    follows; nothing lands in public, no index is left invalid."""
    from outbox.db.conninfo import libpq_url
    from outbox.migrate import current_revision, head_revision

    with _pgbouncer(pgbouncer_binary, fresh_database_url) as url:
        result = cli("db", "upgrade", env=_through_pooler(url))
        assert result.returncode == 0, result.stderr
    assert current_revision(fresh_database_url) == head_revision()
    built = ("ix_outbox_cancelled", "ix_chats_assigned", "ix_contacts_recent",
             "ix_messages_workspace_id_created_at_id")
    with psycopg.connect(libpq_url(fresh_database_url)) as conn:
        where = dict(conn.execute(
            "SELECT c.relname, n.nspname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = ANY(%s) AND c.relkind = 'i'", (list(built),)).fetchall())
        public = conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                              "ON n.oid = c.relnamespace WHERE n.nspname = 'public'").fetchone()
        invalid = conn.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()
    assert where == {name: "outbox" for name in built}
    assert public == (0,) and invalid == (0,)
