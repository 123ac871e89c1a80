"""The ``rate_limits`` table: per-key and per-team overrides of the defaults."""

from __future__ import annotations

from typing import Any

from ccag.ratelimit import Limits
from ccag.store import Connection

SCOPES = ("key", "team")


def load_limits(connection: Connection) -> dict[tuple[str, str], Limits]:
    rows = connection.query("SELECT scope, name, rpm, tpm FROM rate_limits")
    return {(row[0], row[1]): Limits(row[2], row[3]) for row in rows}


def save_limits(
    connection: Connection, scope: str, name: str, limits: Limits, now: float
) -> None:
    connection.execute(
        "DELETE FROM rate_limits WHERE scope = ? AND name = ?", (scope, name)
    )
    connection.execute(
        "INSERT INTO rate_limits (scope, name, rpm, tpm, updated_at) VALUES (?, ?, ?, ?, ?)",
        (scope, name, limits.rpm, limits.tpm, now),
    )


def delete_limits(connection: Connection, scope: str, name: str) -> int:
    return connection.execute(
        "DELETE FROM rate_limits WHERE scope = ? AND name = ?", (scope, name)
    )


def limits_document(scope: str, name: str, limits: Limits) -> dict[str, Any]:
    return {"scope": scope, "name": name, "rpm": limits.rpm, "tpm": limits.tpm}
