"""ccag's storage: one schema, SQLite by default, PostgreSQL for several gateways.

Open with :func:`open_store`; run work with ``store.call(fn)`` (synchronous)
or ``await store.run(fn)`` (Trio, in a worker thread). ``fn`` receives a
:class:`Connection` whose SQL uses ``?`` placeholders on every backend.
"""

from __future__ import annotations

import functools
import logging
import time

import trio

from ccag.errors import ConfigError
from ccag.store.base import Connection, Store, StoreConflict, StoreError
from ccag.store.migrations import MIGRATIONS, migrate, schema_version

__all__ = [
    "Connection",
    "Store",
    "StoreConflict",
    "StoreError",
    "open_store",
    "open_store_sync",
    "parse_store_url",
]

logger = logging.getLogger(__name__)

_SQLITE_SCHEME = "sqlite://"
_POSTGRES_SCHEMES = ("postgres://", "postgresql://")


def parse_store_url(url_or_path: str) -> tuple[str, str]:
    """Split a store location into (backend, target).

    A plain path or ``sqlite://PATH`` (so ``sqlite:///var/lib/ccag.db`` is the
    absolute path ``/var/lib/ccag.db``) is SQLite; ``postgres://`` and
    ``postgresql://`` URLs are PostgreSQL, passed to libpq unchanged.

    Raises:
        ConfigError: the location is empty or uses another scheme.
    """
    location = url_or_path.strip()
    if location.startswith(_POSTGRES_SCHEMES):
        return "postgres", location
    if location.startswith(_SQLITE_SCHEME):
        location = location[len(_SQLITE_SCHEME):]
    elif "://" in location:
        scheme = location.split("://", 1)[0]
        raise ConfigError(
            f"store: unsupported scheme {scheme!r}; use a file path, sqlite:// or postgres://"
        )
    if not location:
        raise ConfigError("store: empty path")
    return "sqlite", location


async def open_store(url_or_path: str, *, now: float | None = None) -> Store:
    """Open the store and bring its schema up to date, in a worker thread.

    See :func:`open_store_sync`, which this runs.
    """
    return await trio.to_thread.run_sync(
        functools.partial(open_store_sync, url_or_path, now=now)
    )


def open_store_sync(url_or_path: str, *, now: float | None = None) -> Store:
    """Open the store and bring its schema up to date, blocking.

    For the CLI and tests; Trio code uses :func:`open_store`. A new SQLite
    file is created readable by its owner only, with any missing directories.

    Args:
        url_or_path: see :func:`parse_store_url`.
        now: the time recorded for migrations (default: the wall clock).

    Raises:
        ConfigError: the location is not understood.
        StoreError: the database cannot be opened or migrated.
    """
    backend, target = parse_store_url(url_or_path)
    if backend == "postgres":
        from ccag.store.postgres import PostgresConnection, _redact

        store = Store(lambda: PostgresConnection(target), _redact(target))
    else:
        from ccag.store.sqlite import SqliteConnection, prepare_file

        try:
            prepare_file(target)
        except OSError as exc:
            raise StoreError(f"cannot create the store file {target}: {exc.strerror}") from exc
        store = Store(lambda: SqliteConnection(target), target)

    migrated_at = time.time() if now is None else now
    try:
        applied = store.call(lambda connection: migrate(connection, migrated_at))
        version = store.call(schema_version, readonly=True)
    except BaseException:
        store.close()
        raise
    if applied:
        logger.info("store %s migrated to schema version %d", store.description, version)
    known = max(migration.version for migration in MIGRATIONS)
    if version > known:
        logger.warning(
            "store %s has schema version %d, newer than this ccag knows (%d)",
            store.description, version, known,
        )
    return store
