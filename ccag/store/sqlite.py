"""The SQLite backend: one file, WAL journal, foreign keys enforced."""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Any

from ccag.store.base import Connection, Params, StoreConflict, StoreError

# How long a statement waits for another process's write lock before failing.
# Writes are short (one key, one session, one spend batch), so seconds of
# waiting means something is stuck, not busy.
BUSY_TIMEOUT_SECONDS = 5.0

# Switching a new file to WAL needs an exclusive lock that SQLite does not
# wait for through the busy timeout, so gateways opening a fresh store
# together would fail at once with "database is locked": they retry the
# switch this often, for up to BUSY_TIMEOUT_SECONDS.
WAL_RETRY_SECONDS = 0.05

# The database holds key hashes and password hashes: only the owner may read.
FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def _translate(exc: sqlite3.Error, path: str) -> StoreError:
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreConflict(str(exc))
    return StoreError(f"SQLite {path}: {exc}")


class SqliteConnection(Connection):
    """A :class:`Connection` over :mod:`sqlite3`.

    Transactions are explicit (``isolation_level=None``): a read-only unit of
    work uses a deferred ``BEGIN`` and never waits for writers (WAL lets
    readers and one writer proceed together); any other unit takes the write
    lock up front with ``BEGIN IMMEDIATE``, so a read-then-write never fails
    with "database is locked" half way through.
    """

    backend = "sqlite"

    def __init__(self, path: str) -> None:
        self._path = path
        try:
            self._connection = sqlite3.connect(
                path,
                timeout=BUSY_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,  # the Store's lock serialises use
            )
            self._switch_to_wal()
            self._connection.execute("PRAGMA foreign_keys=ON")
            self._connection.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
        except sqlite3.Error as exc:
            raise _translate(exc, path) from exc

    def _switch_to_wal(self) -> None:
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                self._connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                is_busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
                if not is_busy or time.monotonic() >= deadline:
                    raise
            time.sleep(WAL_RETRY_SECONDS)

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        try:
            return self._connection.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, self._path) from exc

    def execute(self, sql: str, params: Params = ()) -> int:
        try:
            return self._connection.execute(sql, tuple(params)).rowcount
        except sqlite3.Error as exc:
            raise _translate(exc, self._path) from exc

    def begin(self, readonly: bool) -> None:
        self.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.execute("COMMIT")

    def rollback(self) -> None:
        if self._connection.in_transaction:
            self.execute("ROLLBACK")

    def lock_for_migration(self) -> None:
        # BEGIN IMMEDIATE already holds the database's one write lock.
        pass

    def close(self) -> None:
        try:
            self._connection.close()
        except sqlite3.Error as exc:
            raise _translate(exc, self._path) from exc


def prepare_file(path: str) -> None:
    """Create the database file owner-only (and its directories) if missing.

    SQLite would create the file itself, but with the umask's permissions;
    its ``-wal`` and ``-shm`` files copy the main file's mode, so creating it
    0600 first keeps all three private.
    """
    if path == ":memory:":
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=DIRECTORY_MODE, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:
        return
    os.close(descriptor)
