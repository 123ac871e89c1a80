"""Administration queries: users, teams and keys as the admin API shows them.

Like :mod:`ccag.store.identity`, each function is one step of a unit of
work run by ``store.call``/``store.run``. These are the reads and writes of
the ``/admin`` routes: listings with counts, renames, owner changes and
deletions. They check nothing about who asks; ``ccag.api.admin`` does.

A key is *live* when it is neither revoked nor expired; deletions of users
and teams are refused while they own live keys unless forced, because a
forced deletion removes their keys with them (``ON DELETE CASCADE``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ccag.store.base import Connection
from ccag.store.identity import _KEY_COLUMNS, KeyRecord, new_id

# The key columns an update may change, by the name the admin API uses.
_KEY_UPDATE_COLUMNS = {
    "name": "name",
    "expires_at": "expires_at",
    "role": "role",
    "user_id": "user_id",
    "team_id": "team_id",
}
_USER_UPDATE_COLUMNS = {"name": "name", "role": "role", "password_hash": "password_hash"}

_LIVE_KEY = "k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > ?)"


@attrs.frozen
class UserEntry:
    """A user as listed: never the password hash, only whether one is set."""

    id: str
    name: str
    role: str
    has_password: bool
    team: str | None
    created_at: float
    live_keys: int


@attrs.frozen
class TeamEntry:
    id: str
    name: str
    created_at: float
    members: tuple[str, ...]
    live_keys: int


# -- users ------------------------------------------------------------------

_USER_SELECT = f"""SELECT u.id, u.name, u.role, u.password_hash IS NOT NULL, t.name,
    u.created_at,
    (SELECT COUNT(*) FROM api_keys k WHERE k.user_id = u.id AND {_LIVE_KEY})
    FROM users u
    LEFT JOIN team_members m ON m.user_id = u.id
    LEFT JOIN teams t ON t.id = m.team_id"""


def _user(row: tuple[Any, ...]) -> UserEntry:
    id_, name, role, has_password, team, created_at, live = row
    return UserEntry(id_, name, role, bool(has_password), team, created_at, int(live))


def list_users(connection: Connection, now: float) -> list[UserEntry]:
    """Every user, by name."""
    rows = connection.query(f"{_USER_SELECT} ORDER BY u.name", (now,))
    return [_user(row) for row in rows]


def get_user(connection: Connection, name_or_id: str, now: float) -> UserEntry | None:
    """The user with this name, else with this id."""
    for column in ("name", "id"):
        rows = connection.query(f"{_USER_SELECT} WHERE u.{column} = ?", (now, name_or_id))
        if rows:
            return _user(rows[0])
    return None


def insert_user(
    connection: Connection, name: str, role: str, password_hash: str | None, now: float
) -> str:
    """Create a user; returns its id.

    Raises:
        StoreConflict: a user already has this name.
    """
    user_id = new_id("usr")
    connection.execute(
        "INSERT INTO users (id, name, role, password_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        (user_id, name, role, password_hash, now),
    )
    return user_id


def update_user(connection: Connection, user_id: str, changes: Mapping[str, Any]) -> None:
    """Set ``name``, ``role`` and/or ``password_hash`` of one user.

    Raises:
        StoreConflict: the new name is taken.
    """
    _update(connection, "users", _USER_UPDATE_COLUMNS, user_id, changes)


def set_user_team(
    connection: Connection, user_id: str, team_id: str | None, now: float
) -> None:
    """Put a user in a team (leaving any other), or in none."""
    connection.execute("DELETE FROM team_members WHERE user_id = ?", (user_id,))
    if team_id is not None:
        connection.execute(
            "INSERT INTO team_members (user_id, team_id, added_at) VALUES (?, ?, ?)",
            (user_id, team_id, now),
        )


def delete_user(connection: Connection, user_id: str) -> None:
    """Delete a user with their keys, sessions and team membership."""
    connection.execute("DELETE FROM users WHERE id = ?", (user_id,))


def count_admins(connection: Connection) -> int:
    """Users with the admin role."""
    return int(connection.query("SELECT COUNT(*) FROM users WHERE role = 'admin'")[0][0])


# -- teams ------------------------------------------------------------------

_TEAM_SELECT = f"""SELECT t.id, t.name, t.created_at,
    (SELECT COUNT(*) FROM api_keys k WHERE k.team_id = t.id AND {_LIVE_KEY})
    FROM teams t"""


def _team(connection: Connection, row: tuple[Any, ...]) -> TeamEntry:
    members = connection.query(
        "SELECT u.name FROM team_members m JOIN users u ON u.id = m.user_id"
        " WHERE m.team_id = ? ORDER BY u.name",
        (row[0],),
    )
    return TeamEntry(row[0], row[1], row[2], tuple(m[0] for m in members), int(row[3]))


def list_teams(connection: Connection, now: float) -> list[TeamEntry]:
    """Every team, by name, with its members."""
    rows = connection.query(f"{_TEAM_SELECT} ORDER BY t.name", (now,))
    return [_team(connection, row) for row in rows]


def get_team(connection: Connection, name_or_id: str, now: float) -> TeamEntry | None:
    """The team with this name, else with this id."""
    for column in ("name", "id"):
        rows = connection.query(f"{_TEAM_SELECT} WHERE t.{column} = ?", (now, name_or_id))
        if rows:
            return _team(connection, rows[0])
    return None


def insert_team(connection: Connection, name: str, now: float) -> str:
    """Create a team; returns its id.

    Raises:
        StoreConflict: a team already has this name.
    """
    team_id = new_id("team")
    connection.execute(
        "INSERT INTO teams (id, name, created_at) VALUES (?, ?, ?)", (team_id, name, now)
    )
    return team_id


def rename_team(connection: Connection, team_id: str, name: str) -> None:
    """Raises: StoreConflict: the name is taken."""
    connection.execute("UPDATE teams SET name = ? WHERE id = ?", (name, team_id))


def delete_team(connection: Connection, team_id: str) -> None:
    """Delete a team with its keys; its members stay, in no team."""
    connection.execute("DELETE FROM teams WHERE id = ?", (team_id,))


# -- keys -------------------------------------------------------------------


def list_keys(
    connection: Connection, *, user: str | None = None, team: str | None = None
) -> list[KeyRecord]:
    """Keys, oldest first, optionally only those of one user and/or team."""
    conditions: list[str] = []
    params: list[str] = []
    if user is not None:
        conditions.append("u.name = ?")
        params.append(user)
    if team is not None:
        conditions.append("t.name = ?")
        params.append(team)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    rows = connection.query(f"SELECT {_KEY_COLUMNS}{where} ORDER BY k.created_at, k.id", params)
    return [KeyRecord(*row) for row in rows]


def get_key_by_id(connection: Connection, key_id: str) -> KeyRecord | None:
    rows = connection.query(f"SELECT {_KEY_COLUMNS} WHERE k.id = ?", (key_id,))
    return KeyRecord(*rows[0]) if rows else None


def update_key(connection: Connection, key_id: str, changes: Mapping[str, Any]) -> None:
    """Set any of ``name``, ``expires_at``, ``role``, ``user_id``, ``team_id``.

    Raises:
        StoreConflict: the new name is taken by a live key, or the key would
            be left with neither user nor team.
    """
    _update(connection, "api_keys", _KEY_UPDATE_COLUMNS, key_id, changes)


def _update(
    connection: Connection,
    table: str,
    columns: Mapping[str, str],
    row_id: str,
    changes: Mapping[str, Any],
) -> None:
    if not changes:
        return
    unknown = set(changes) - set(columns)
    if unknown:
        raise ValueError(f"cannot update {', '.join(sorted(unknown))} of {table}")
    assignments = ", ".join(f"{columns[field]} = ?" for field in changes)
    connection.execute(
        f"UPDATE {table} SET {assignments} WHERE id = ?", (*changes.values(), row_id)
    )
