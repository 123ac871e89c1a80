"""Queries on login attempts not proven good, the store side of login throttling.

A row is written when a login attempt starts and deleted when it succeeds,
so a row is a failed attempt or one still in flight (see
:class:`ccag.auth.sessions.LoginThrottle`). Every gateway on the store sees
every row, so the limits hold across gateways and across restarts. Rows are
pruned by age, so the table holds at most the failures of the last few
minutes.

Each function is one step of a unit of work: it takes a
:class:`~ccag.store.Connection` and runs inside ``store.run``.
"""

from __future__ import annotations

import hashlib
import secrets

from ccag.store import Connection

# Rows read for one address or account. Refused attempts write no row, so a
# locked-out guesser adds none and a live address or account has a handful;
# the cap only bounds a read should that reasoning ever fail.
MAX_FAILURES_READ = 1_000
# Random bytes in an attempt id: unique across gateways without coordination.
_ATTEMPT_ID_BYTES = 16


def new_attempt_id() -> str:
    """A fresh id for one login attempt's row."""
    return "login_" + secrets.token_hex(_ATTEMPT_ID_BYTES)


def account_hash(username: str) -> str:
    """What a row records of the name a login tried.

    Hashed because people type their password into the name field; the hash
    is unsalted (every gateway must derive the same one), which keeps only a
    weak secret guessable, and a row lives minutes.
    """
    return hashlib.sha256(username.encode("utf-8", "surrogateescape")).hexdigest()


def record_attempt(
    connection: Connection, attempt_id: str, client: str, account: str, now: float
) -> None:
    """Count an attempt as failed until :func:`forget_attempt` says otherwise."""
    connection.execute(
        "INSERT INTO login_failures (id, client, account_hash, failed_at) VALUES (?, ?, ?, ?)",
        (attempt_id, client, account, now),
    )


def forget_attempt(connection: Connection, attempt_id: str) -> None:
    """Uncount an attempt that succeeded (earlier failures still count)."""
    connection.execute("DELETE FROM login_failures WHERE id = ?", (attempt_id,))


def prune_failures(connection: Connection, before: float) -> int:
    """Delete rows older than ``before``; returns how many went."""
    return connection.execute("DELETE FROM login_failures WHERE failed_at < ?", (before,))


def failures_of_client(connection: Connection, client: str, since: float) -> list[float]:
    """Times of the client's rows after ``since``, oldest first."""
    return _failure_times(connection, "client", client, since)


def failures_of_account(connection: Connection, account: str, since: float) -> list[float]:
    """Times of the rows naming ``account`` (a hash) after ``since``, oldest first."""
    return _failure_times(connection, "account_hash", account, since)


def _failure_times(connection: Connection, column: str, value: str, since: float) -> list[float]:
    # ``column`` is one of two names fixed above, never input.
    rows = connection.query(
        f"SELECT failed_at FROM login_failures WHERE {column} = ? AND failed_at > ?"
        " ORDER BY failed_at DESC LIMIT ?",
        (value, since, MAX_FAILURES_READ),
    )
    return sorted(float(row[0]) for row in rows)


def count_failures(connection: Connection) -> int:
    """Rows in the table, for tests and diagnostics."""
    return int(connection.query("SELECT COUNT(*) FROM login_failures")[0][0])
