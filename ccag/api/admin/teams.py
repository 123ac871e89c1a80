"""``/admin/teams``: create, list, show, rename and delete teams (admins only).

A team with live keys is deleted only with ``?force=true``, which deletes
its keys too; its members stay, in no team.
"""

from __future__ import annotations

from typing import Any

from ccag.api.admin.common import (
    Admin,
    Reply,
    bad_request,
    body,
    conflict,
    is_true,
    item_route,
    live_keys_conflict,
    name_field,
    not_found,
    query,
)
from ccag.auth.keys import format_time
from ccag.errors import ApiError
from ccag.server.types import Request
from ccag.store import Connection, StoreConflict, directory
from ccag.store.directory import TeamEntry

PREFIX = "/admin/teams/"


def team_document(team: TeamEntry) -> dict[str, Any]:
    return {
        "id": team.id,
        "name": team.name,
        "members": list(team.members),
        "created_at": format_time(team.created_at),
        "live_keys": team.live_keys,
    }


def _no_such_team(name: str) -> ApiError:
    return not_found(f"no team named {name[:80]!r}")


def _find(connection: Connection, name: str, now: float) -> TeamEntry:
    team = directory.get_team(connection, name, now)
    if team is None:
        raise _no_such_team(name)
    return team


async def create_team(admin: Admin, request: Request) -> Reply:
    """``POST /admin/teams``: ``{"name"}``."""
    await admin.admin(request)
    name = str(name_field(body(request, ("name",)), "name", required=True))
    now = admin.now()

    def insert(connection: Connection) -> TeamEntry:
        return _find(connection, directory.insert_team(connection, name, now), now)

    try:
        team = await admin.write(insert)
    except StoreConflict:
        raise conflict(f"a team named {name!r} exists") from None
    return Reply(201, team_document(team))


async def list_teams(admin: Admin, request: Request) -> Reply:
    """``GET /admin/teams``."""
    await admin.admin(request)
    now = admin.now()
    teams = await admin.read(lambda connection: directory.list_teams(connection, now))
    return Reply(200, {"teams": [team_document(team) for team in teams]})


async def team_item(admin: Admin, request: Request) -> Reply:
    """``GET``, ``PATCH``, ``DELETE /admin/teams/{name or id}``."""
    route, name = item_route(request, PREFIX, {
        ("GET", None): _show_team,
        ("HEAD", None): _show_team,
        ("PATCH", None): _rename_team,
        ("DELETE", None): _delete_team,
    })
    await admin.admin(request)
    return await route(admin, request, name)


async def _show_team(admin: Admin, request: Request, name: str) -> Reply:
    now = admin.now()
    return Reply(200, team_document(await admin.read(lambda c: _find(c, name, now))))


async def _rename_team(admin: Admin, request: Request, name: str) -> Reply:
    """``PATCH``: ``{"name"}``."""
    document = body(request, ("name",))
    new_name = name_field(document, "name", required=False)
    if new_name is None:
        raise bad_request("name: required; it is the only thing a team has to change")
    now = admin.now()

    def rename(connection: Connection) -> TeamEntry:
        team = _find(connection, name, now)
        directory.rename_team(connection, team.id, new_name)
        return _find(connection, team.id, now)

    try:
        team = await admin.write(rename)
    except StoreConflict:
        raise conflict(f"a team named {new_name!r} exists") from None
    await admin.keys_changed()
    return Reply(200, team_document(team))


async def _delete_team(admin: Admin, request: Request, name: str) -> Reply:
    """``DELETE [?force=true]``."""
    is_forced = is_true(query(request).get("force"))
    now = admin.now()

    def delete(connection: Connection) -> TeamEntry:
        team = _find(connection, name, now)
        if team.live_keys and not is_forced:
            raise live_keys_conflict("team", team.name, team.live_keys, "its")
        directory.delete_team(connection, team.id)
        return team

    team = await admin.write(delete)
    await admin.keys_changed()
    return Reply(200, {**team_document(team), "deleted": True})
