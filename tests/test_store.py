"""The store: migrations, transactions, worker threads, on SQLite and PostgreSQL.

PostgreSQL tests start a throwaway server (initdb in a temporary directory,
listening on 127.0.0.1) and fail if it cannot be started; set
CCAG_TEST_POSTGRES=0 to leave PostgreSQL out of the run.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator

import pytest
import trio

from ccag.errors import ConfigError
from ccag.store import (
    Store,
    StoreConflict,
    StoreError,
    identity,
    open_store,
    open_store_sync,
    parse_store_url,
)
from ccag.store.migrations import MIGRATIONS, Migration, migrate, schema_version
from ccag.store.postgres import to_pyformat
from tests.postgres_fixture import BACKENDS, USE_POSTGRES, postgres_server  # noqa: F401
from tests.postgres_fixture import free_loopback_port as _free_loopback_port
from tests.postgres_fixture import fresh_postgres_database as _fresh_postgres_database


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[str]:
    """A location for a brand-new, empty store on each backend."""
    if request.param == "sqlite":
        yield f"sqlite://{tmp_path}/nested/dir/ccag.sqlite3"
    else:
        yield from _fresh_postgres_database(request.getfixturevalue("postgres_server"))


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store_sync(store_url, now=1000.0) as opened:
        yield opened


def _migration_rows(store: Store) -> list[tuple[object, ...]]:
    return store.call(
        lambda c: c.query("SELECT version, name FROM schema_migrations ORDER BY version"),
        readonly=True,
    )


# -- locations --------------------------------------------------------------


def test_parse_store_url_plain_path_and_sqlite_scheme_are_sqlite() -> None:
    assert parse_store_url("/var/lib/ccag.db") == ("sqlite", "/var/lib/ccag.db")
    assert parse_store_url("relative.db") == ("sqlite", "relative.db")
    assert parse_store_url("sqlite:///var/lib/ccag.db") == ("sqlite", "/var/lib/ccag.db")


def test_parse_store_url_postgres_schemes() -> None:
    for url in ("postgres://u:p@db:5432/ccag", "postgresql://db/ccag"):
        assert parse_store_url(url) == ("postgres", url)


def test_parse_store_url_refuses_other_schemes_and_empty() -> None:
    with pytest.raises(ConfigError, match="mysql"):
        parse_store_url("mysql://db/ccag")
    with pytest.raises(ConfigError):
        parse_store_url("sqlite://")


def test_to_pyformat_rewrites_placeholders_outside_literals() -> None:
    assert to_pyformat("SELECT ? WHERE a = '?' AND b LIKE 'x%' AND c = ?") == (
        "SELECT %s WHERE a = '?' AND b LIKE 'x%%' AND c = %s"
    )


# -- migrations -------------------------------------------------------------


def test_migrations_run_once_and_record_each_version(store: Store) -> None:
    assert [row[0] for row in _migration_rows(store)] == [m.version for m in MIGRATIONS]
    assert store.call(schema_version, readonly=True) == MIGRATIONS[-1].version


def test_migrations_rerun_at_start_change_nothing(store_url: str) -> None:
    with open_store_sync(store_url, now=1.0) as first:
        first.call(lambda c: identity.ensure_user(c, "alice", "member", 1.0))
        rows_before = _migration_rows(first)

    with open_store_sync(store_url, now=2.0) as second:
        assert second.call(lambda c: migrate(c, 3.0)) == []
        assert _migration_rows(second) == rows_before
        assert second.call(lambda c: identity.find_user(c, "alice")) is not None


def test_migration_statements_are_idempotent(store: Store) -> None:
    def replay(connection: object) -> None:
        for migration in MIGRATIONS:
            for statement in migration.statements:
                connection.execute(statement)  # type: ignore[attr-defined]

    store.call(replay)
    assert [row[0] for row in _migration_rows(store)] == [m.version for m in MIGRATIONS]


def test_new_migration_applies_once(store: Store) -> None:
    extra = MIGRATIONS + (
        Migration(99, "test table", ("CREATE TABLE IF NOT EXISTS extra (id TEXT PRIMARY KEY)",)),
    )
    assert store.call(lambda c: migrate(c, 5.0, extra)) == [99]
    assert store.call(lambda c: migrate(c, 6.0, extra)) == []
    assert store.call(lambda c: c.query("SELECT COUNT(*) FROM extra"))[0][0] == 0


def test_gateways_starting_together_migrate_once(store_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            open_store_sync(store_url).close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    with open_store_sync(store_url) as store:
        assert [row[0] for row in _migration_rows(store)] == [m.version for m in MIGRATIONS]


# -- transactions and errors ------------------------------------------------


def test_failed_unit_of_work_rolls_back(store: Store) -> None:
    def half_done(connection: object) -> None:
        identity.ensure_user(connection, "ghost", "member", 1.0)  # type: ignore[arg-type]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.call(half_done)
    assert store.call(lambda c: identity.find_user(c, "ghost")) is None


def test_duplicate_live_key_name_is_a_conflict(store: Store) -> None:
    def add(connection: object, key_hash: str) -> str:
        user_id = identity.ensure_user(connection, "alice", "member", 1.0)  # type: ignore[arg-type]
        return identity.insert_key(
            connection, name="laptop", key_hash=key_hash, key_prefix="sk-ccag-xxxx",  # type: ignore[arg-type]
            user_id=user_id, team_id=None, role=None, now=1.0, expires_at=None,
        )

    first = store.call(lambda c: add(c, "a" * 64))
    with pytest.raises(StoreConflict):
        store.call(lambda c: add(c, "b" * 64))

    # Once revoked, the name is free again.
    assert store.call(lambda c: identity.revoke_key(c, first, 2.0))
    store.call(lambda c: add(c, "c" * 64))


def test_foreign_keys_are_enforced(store: Store) -> None:
    with pytest.raises(StoreConflict):
        store.call(
            lambda c: identity.insert_key(
                c, name="orphan", key_hash="d" * 64, key_prefix="sk-ccag-xxxx",
                user_id="usr_missing", team_id=None, role=None, now=1.0, expires_at=None,
            )
        )


def test_closed_store_refuses_work(store: Store) -> None:
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.call(schema_version)


async def test_run_works_in_a_worker_thread(store_url: str) -> None:
    loop_thread = threading.get_ident()
    with trio.fail_after(30):
        store = await open_store(store_url)
        try:
            worker_thread = await store.run(lambda c: threading.get_ident())
            await store.ping()
        finally:
            await store.aclose()
    assert worker_thread != loop_thread
    with pytest.raises(StoreError):
        await store.ping()


# -- SQLite specifics -------------------------------------------------------


def test_sqlite_file_is_private_and_in_wal_mode(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "a", "b", "ccag.sqlite3")
    with open_store_sync(path) as store:
        store.call(lambda c: identity.ensure_user(c, "alice", "member", 1.0))
        journal = store.call(lambda c: c.query("PRAGMA journal_mode"))[0][0]
        foreign_keys = store.call(lambda c: c.query("PRAGMA foreign_keys"))[0][0]
        busy_timeout = store.call(lambda c: c.query("PRAGMA busy_timeout"))[0][0]
        assert store.backend == "sqlite"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert journal == "wal"
    assert foreign_keys == 1
    assert busy_timeout > 0


def test_sqlite_unwritable_location_is_a_store_error(tmp_path: object) -> None:
    blocker = os.path.join(str(tmp_path), "file")
    open(blocker, "w").close()
    with pytest.raises(StoreError, match="cannot create"):
        open_store_sync(os.path.join(blocker, "ccag.sqlite3"))


# -- PostgreSQL specifics ---------------------------------------------------


# Defined only when PostgreSQL is part of the run (CCAG_TEST_POSTGRES).
if USE_POSTGRES:

    def test_postgres_reconnects_after_the_connection_breaks(postgres_server: str) -> None:
        import psycopg

        for url in _fresh_postgres_database(postgres_server):
            with open_store_sync(url) as store:
                assert store.backend == "postgres"
                pid = store.call(lambda c: c.query("SELECT pg_backend_pid()"))[0][0]
                with psycopg.connect(postgres_server + "/postgres", autocommit=True) as admin:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

                with pytest.raises(StoreError):
                    store.call(lambda c: c.query("SELECT 1"))
                assert store.call(lambda c: c.query("SELECT 1")) == [(1,)]


def test_postgres_unreachable_is_a_store_error_without_password() -> None:
    port = _free_loopback_port()
    with pytest.raises(StoreError) as caught:
        open_store_sync(f"postgres://ccag:secret@127.0.0.1:{port}/ccag")
    assert "secret" not in str(caught.value)
    assert "***" in str(caught.value)
