"""Queries on users, teams, API keys and admin sessions.

Each function is one step of a unit of work: it takes a
:class:`~ccag.store.base.Connection` and is meant to run inside
``store.call``/``store.run``. Nothing here hashes, generates or checks
secrets; ``ccag.auth`` does that and hands in hashes.
"""

from __future__ import annotations

import secrets
from typing import Any

import attrs

from ccag.store.base import Connection

ROLES = ("admin", "member")

# Random bytes in a record id: collisions are out of reach, and the id stays
# short enough to type (``ccag keys revoke key_0123456789abcdef``).
_ID_BYTES = 8


def new_id(kind: str) -> str:
    """A fresh id such as ``key_0123456789abcdef``."""
    return f"{kind}_{secrets.token_hex(_ID_BYTES)}"


@attrs.frozen
class KeyRecord:
    """One API key as stored (its hash, never the key)."""

    id: str
    name: str
    key_hash: str
    key_prefix: str
    user_name: str | None
    team_name: str | None
    key_role: str | None
    user_role: str | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None

    @property
    def role(self) -> str:
        """The key's role override, else its user's role; team keys are members."""
        return self.key_role or self.user_role or "member"


@attrs.frozen
class UserRecord:
    id: str
    name: str
    role: str
    password_hash: str | None


@attrs.frozen
class SessionRecord:
    user_name: str
    role: str
    expires_at: float


# -- users and teams --------------------------------------------------------


def find_user(connection: Connection, name: str) -> UserRecord | None:
    rows = connection.query(
        "SELECT id, name, role, password_hash FROM users WHERE name = ?", (name,)
    )
    return UserRecord(*rows[0]) if rows else None


def ensure_user(connection: Connection, name: str, role: str, now: float) -> str:
    """The id of user ``name``, created with ``role`` if missing."""
    connection.execute(
        "INSERT INTO users (id, name, role, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        (new_id("usr"), name, role, now),
    )
    return str(connection.query("SELECT id FROM users WHERE name = ?", (name,))[0][0])


def ensure_team(connection: Connection, name: str, now: float) -> str:
    """The id of team ``name``, created if missing."""
    connection.execute(
        "INSERT INTO teams (id, name, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (name) DO NOTHING",
        (new_id("team"), name, now),
    )
    return str(connection.query("SELECT id FROM teams WHERE name = ?", (name,))[0][0])


def set_admin_password(
    connection: Connection, name: str, password_hash: str, now: float, *, only_if_unset: bool
) -> bool:
    """Make ``name`` an admin with this password hash, creating the user if needed.

    Args:
        only_if_unset: leave a user that already has a password untouched.

    Returns:
        True if the password was set.
    """
    ensure_user(connection, name, "admin", now)
    condition = " AND password_hash IS NULL" if only_if_unset else ""
    changed = connection.execute(
        "UPDATE users SET role = 'admin', password_hash = ? WHERE name = ?" + condition,
        (password_hash, name),
    )
    return changed == 1


# -- API keys ---------------------------------------------------------------

_KEY_COLUMNS = """k.id, k.name, k.key_hash, k.key_prefix, u.name, t.name, k.role,
    u.role, k.created_at, k.expires_at, k.revoked_at
    FROM api_keys k
    LEFT JOIN users u ON u.id = k.user_id
    LEFT JOIN teams t ON t.id = k.team_id"""


def _key(row: tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(*row)


def insert_key(
    connection: Connection,
    *,
    name: str,
    key_hash: str,
    key_prefix: str,
    user_id: str | None,
    team_id: str | None,
    role: str | None,
    now: float,
    expires_at: float | None,
) -> str:
    """Store a new key; returns its id.

    Raises:
        StoreConflict: a live key already has this name.
    """
    key_id = new_id("key")
    connection.execute(
        "INSERT INTO api_keys (id, name, key_hash, key_prefix, user_id, team_id, role,"
        " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (key_id, name, key_hash, key_prefix, user_id, team_id, role, now, expires_at),
    )
    return key_id


def load_keys(connection: Connection) -> list[KeyRecord]:
    """Every key, revoked and expired ones included, oldest first."""
    rows = connection.query(f"SELECT {_KEY_COLUMNS} ORDER BY k.created_at, k.id")
    return [_key(row) for row in rows]


def find_keys(connection: Connection, name_or_id: str) -> list[KeyRecord]:
    """The key with this id, else the live key with this name (at most one)."""
    rows = connection.query(f"SELECT {_KEY_COLUMNS} WHERE k.id = ?", (name_or_id,))
    if not rows:
        rows = connection.query(
            f"SELECT {_KEY_COLUMNS} WHERE k.name = ? AND k.revoked_at IS NULL",
            (name_or_id,),
        )
    return [_key(row) for row in rows]


def revoke_key(connection: Connection, key_id: str, now: float) -> bool:
    """Mark a key revoked; False if it was revoked already."""
    changed = connection.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
        (now, key_id),
    )
    return changed == 1


# -- admin sessions ---------------------------------------------------------


def insert_session(
    connection: Connection, token_hash: str, user_id: str, now: float, expires_at: float
) -> None:
    connection.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at)"
        " VALUES (?, ?, ?, ?)",
        (token_hash, user_id, now, expires_at),
    )


def find_session(connection: Connection, token_hash: str) -> SessionRecord | None:
    rows = connection.query(
        "SELECT u.name, u.role, s.expires_at FROM sessions s"
        " JOIN users u ON u.id = s.user_id WHERE s.token_hash = ?",
        (token_hash,),
    )
    return SessionRecord(*rows[0]) if rows else None


def delete_session(connection: Connection, token_hash: str) -> None:
    connection.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))


def delete_user_sessions(connection: Connection, user_id: str, keep_token_hash: str | None) -> int:
    """End every session of a user but the one ``keep_token_hash`` names (if any)."""
    return connection.execute(
        "DELETE FROM sessions WHERE user_id = ? AND token_hash <> ?",
        (user_id, keep_token_hash or ""),
    )


def delete_expired_sessions(connection: Connection, now: float) -> int:
    return connection.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
