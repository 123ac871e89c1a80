"""The storage interface every backend provides, and the store that runs it.

Theory of operation: a backend supplies a :class:`Connection`, a thin wrapper
over one DB-API connection that speaks our one SQL dialect (``?``
placeholders, portable types) and translates its driver's exceptions into
:class:`StoreError`. :class:`Store` owns exactly one such connection behind a
lock. Work is a plain function of the connection; :meth:`Store.call` runs it
synchronously in one transaction (for the CLI and start-up), and
:meth:`Store.run` runs the same thing in a Trio worker thread, so the event
loop never waits on the database.

Why one connection and a lock rather than one connection per thread: Trio's
worker threads come and go, so per-thread connections would be opened and
leaked at the thread cache's whim, and closing the store could not reach
them. The store's load is small (a key refresh every few seconds, admin
actions, batched spend writes), SQLite serialises writers anyway, and a lock
makes ``close`` final: after it no query runs.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Self, TypeVar

import trio

from ccag.errors import CcagError

logger = logging.getLogger(__name__)

T = TypeVar("T")

Params = Sequence[Any]


class StoreError(CcagError):
    """The database failed or refused an operation; the message says why."""


class StoreConflict(StoreError):
    """A write broke a uniqueness or integrity rule (a duplicate name...)."""


class Connection:
    """One database connection in ccag's SQL dialect.

    Subclasses translate placeholders and driver exceptions; every method may
    raise :class:`StoreError`.
    """

    #: The backend's name, as used in messages: ``sqlite`` or ``postgres``.
    backend = "abstract"

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        """Run a statement and return all its rows."""
        raise NotImplementedError

    def execute(self, sql: str, params: Params = ()) -> int:
        """Run a statement and return the number of rows it changed."""
        raise NotImplementedError

    def begin(self, readonly: bool) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        raise NotImplementedError

    def rollback(self) -> None:
        raise NotImplementedError

    def lock_for_migration(self) -> None:
        """Keep other processes from migrating until this transaction ends."""
        raise NotImplementedError

    @property
    def is_usable(self) -> bool:
        """False once the link to the server is known to be broken."""
        return True

    def close(self) -> None:
        raise NotImplementedError


class Store:
    """The gateway's database: one connection, used one unit of work at a time.

    Args:
        connect: opens a new :class:`Connection`; called lazily, and again
            after a connection broke.
        description: where the data lives, for messages (never a password).
    """

    def __init__(self, connect: Callable[[], Connection], description: str) -> None:
        self._connect = connect
        self.description = description
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._is_closed = False

    @property
    def backend(self) -> str:
        with self._lock:
            return self._open_connection().backend

    def call(self, work: Callable[[Connection], T], *, readonly: bool = False) -> T:
        """Run ``work(connection)`` in one transaction, in this thread.

        The transaction commits when ``work`` returns and rolls back when it
        raises. Use from synchronous code (the CLI, start-up); Trio code uses
        :meth:`run`.

        Args:
            work: the unit of work; its return value is returned.
            readonly: the work only reads, so it need not wait for writers.

        Raises:
            StoreError: the database failed, or the store is closed.
        """
        with self._lock:
            connection = self._open_connection()
            connection.begin(readonly)
            try:
                result = work(connection)
            except BaseException:
                self._roll_back(connection)
                raise
            try:
                connection.commit()
            except StoreError:
                self._roll_back(connection)
                raise
            return result

    async def run(self, work: Callable[[Connection], T], *, readonly: bool = False) -> T:
        """Run ``work(connection)`` in one transaction, in a worker thread.

        Same contract as :meth:`call`. If the caller is cancelled, the work
        still finishes (a transaction is never abandoned half done) and the
        cancellation is delivered after it.
        """
        return await trio.to_thread.run_sync(
            functools.partial(self.call, work, readonly=readonly)
        )

    async def ping(self) -> None:
        """Check the database answers (for readiness probes).

        Raises:
            StoreError: it does not.
        """
        await self.run(_select_one, readonly=True)

    async def aclose(self) -> None:
        """:meth:`close`, from Trio, in a worker thread."""
        await trio.to_thread.run_sync(self.close)

    def close(self) -> None:
        """Close the connection; every later call raises :class:`StoreError`."""
        with self._lock:
            self._is_closed = True
            if self._connection is not None:
                connection, self._connection = self._connection, None
                connection.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _open_connection(self) -> Connection:
        if self._is_closed:
            raise StoreError(f"the store {self.description} is closed")
        if self._connection is not None and not self._connection.is_usable:
            logger.warning("connection to %s broke; reconnecting", self.description)
            self._drop_connection()
        if self._connection is None:
            self._connection = self._connect()
        return self._connection

    def _roll_back(self, connection: Connection) -> None:
        try:
            connection.rollback()
        except StoreError:
            # A connection that cannot even roll back is of no further use.
            self._drop_connection()

    def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except StoreError:
                pass


def _select_one(connection: Connection) -> None:
    connection.query("SELECT 1")
