"""The PostgreSQL backend, over psycopg 3, for several gateways sharing data.

The SQL is the same as SQLite's; the one dialect difference that reaches
statements, the placeholder style, is translated here (``?`` becomes ``%s``).
psycopg is imported only when a ``postgres://`` store is opened, so SQLite
users need not install it.
"""

from __future__ import annotations

import functools
from typing import Any

from ccag.errors import ConfigError
from ccag.store.base import Connection, Params, StoreConflict, StoreError

# Seconds to wait for the server to accept a connection.
CONNECT_TIMEOUT_SECONDS = 10

# A fixed key for pg_advisory_xact_lock: every gateway starting at once
# migrates in turn, not together ("ccag" in ASCII).
MIGRATION_LOCK_KEY = 0x63636167


@functools.lru_cache(maxsize=256)
def to_pyformat(sql: str) -> str:
    """Rewrite ``?`` placeholders as ``%s`` and escape literal ``%``.

    Question marks inside single-quoted string literals are left alone.
    """
    out: list[str] = []
    in_literal = False
    for char in sql:
        if char == "'":
            in_literal = not in_literal
            out.append(char)
        elif char == "%":
            out.append("%%")
        elif char == "?" and not in_literal:
            out.append("%s")
        else:
            out.append(char)
    return "".join(out)


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = credentials.partition(":")
    return f"{scheme}{sep}{user}{':***' if colon else ''}@{host}"


class PostgresConnection(Connection):
    """A :class:`Connection` over psycopg 3, in autocommit mode with explicit
    transactions."""

    backend = "postgres"

    def __init__(self, url: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "a postgres:// store needs psycopg 3: pip install 'psycopg[binary]'"
            ) from None
        self._psycopg = psycopg
        self._where = _redact(url)
        try:
            self._connection = psycopg.connect(
                url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
            )
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to {self._where}: {exc}") from exc

    def _translate(self, exc: Exception) -> StoreError:
        if isinstance(exc, self._psycopg.IntegrityError):
            return StoreConflict(str(exc))
        return StoreError(f"PostgreSQL {self._where}: {exc}")

    def _cursor_run(self, sql: str, params: Params) -> Any:
        try:
            return self._connection.execute(to_pyformat(sql), tuple(params))
        except self._psycopg.Error as exc:
            raise self._translate(exc) from exc

    def query(self, sql: str, params: Params = ()) -> list[tuple[Any, ...]]:
        cursor = self._cursor_run(sql, params)
        try:
            return cursor.fetchall() if cursor.description is not None else []
        except self._psycopg.Error as exc:
            raise self._translate(exc) from exc

    def execute(self, sql: str, params: Params = ()) -> int:
        return int(self._cursor_run(sql, params).rowcount)

    def begin(self, readonly: bool) -> None:
        self._cursor_run("BEGIN READ ONLY" if readonly else "BEGIN", ())

    def commit(self) -> None:
        self._cursor_run("COMMIT", ())

    def rollback(self) -> None:
        if not self._connection.closed:
            self._cursor_run("ROLLBACK", ())

    def lock_for_migration(self) -> None:
        self._cursor_run("SELECT pg_advisory_xact_lock(?)", (MIGRATION_LOCK_KEY,))

    @property
    def is_usable(self) -> bool:
        return not (self._connection.closed or self._connection.broken)

    def close(self) -> None:
        self._connection.close()
