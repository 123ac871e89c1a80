"""``/admin/users``: create, list, show, update and delete users.

Admins only, except that a member may read their own user and change their
own password. Two rules keep the gateway administrable: the last admin can
be neither demoted nor deleted, and nobody deletes their own user. A user
with live keys is deleted only with ``?force=true``, which deletes the keys
(and the user's sessions) too.
"""

from __future__ import annotations

from typing import Any

import trio

from ccag.api.admin.common import (
    MAX_PASSWORD_CHARS,
    Admin,
    Reply,
    bad_request,
    body,
    conflict,
    existing_team_id,
    forbidden,
    is_true,
    item_route,
    live_keys_conflict,
    name_field,
    not_found,
    password_field,
    query,
    refuse_removing_last_admin,
    role_field,
)
from ccag.auth.keys import Principal, bearer_token, format_time
from ccag.auth.passwords import dummy_hash, hash_password, verify_password
from ccag.auth.sessions import SESSION_PREFIX, session_token_hash
from ccag.errors import ApiError
from ccag.server.types import Request
from ccag.store import Connection, StoreConflict, directory, identity
from ccag.store.directory import UserEntry

PREFIX = "/admin/users/"
_FIELDS = ("name", "role", "password", "team")
_UPDATE_FIELDS = (*_FIELDS, "current_password")


def user_document(user: UserEntry) -> dict[str, Any]:
    return {
        "id": user.id,
        "name": user.name,
        "role": user.role,
        "team": user.team,
        "can_log_in": user.has_password,
        "created_at": format_time(user.created_at),
        "live_keys": user.live_keys,
    }


def _no_such_user(name: str) -> ApiError:
    return not_found(f"no user named {name[:80]!r}")


def _find(connection: Connection, name: str, now: float) -> UserEntry:
    user = directory.get_user(connection, name, now)
    if user is None:
        raise _no_such_user(name)
    return user


async def _password_hash(document: dict[str, Any]) -> str | None:
    password = password_field(document)
    if password is None:
        return None
    return await trio.to_thread.run_sync(hash_password, password)


async def create_user(admin: Admin, request: Request) -> Reply:
    """``POST /admin/users``: ``{"name", "role"? (member), "password"?,
    "team"?}``; without a password the user cannot log in (keys still work)."""
    await admin.admin(request)
    document = body(request, _FIELDS)
    name = str(name_field(document, "name", required=True))
    role = role_field(document) or "member"
    team = name_field(document, "team", required=False)
    password_hash = await _password_hash(document)
    now = admin.now()

    def insert(connection: Connection) -> UserEntry:
        team_id = existing_team_id(connection, team, now) if team else None
        user_id = directory.insert_user(connection, name, role, password_hash, now)
        if team_id is not None:
            directory.set_user_team(connection, user_id, team_id, now)
        return _find(connection, user_id, now)

    try:
        user = await admin.write(insert)
    except StoreConflict:
        raise conflict(f"a user named {name!r} exists") from None
    return Reply(201, user_document(user))


async def list_users(admin: Admin, request: Request) -> Reply:
    """``GET /admin/users``."""
    await admin.admin(request)
    now = admin.now()
    users = await admin.read(lambda connection: directory.list_users(connection, now))
    return Reply(200, {"users": [user_document(user) for user in users]})


async def user_item(admin: Admin, request: Request) -> Reply:
    """``GET``, ``PATCH``, ``DELETE /admin/users/{name or id}``."""
    route, name = item_route(request, PREFIX, {
        ("GET", None): _show_user,
        ("HEAD", None): _show_user,
        ("PATCH", None): _update_user,
        ("DELETE", None): _delete_user,
    })
    return await route(admin, request, name)


def _is_self(principal: Principal, user: UserEntry) -> bool:
    return principal.user is not None and principal.user == user.name


async def _show_user(admin: Admin, request: Request, name: str) -> Reply:
    principal = await admin.principal(request)
    now = admin.now()
    user = await admin.read(lambda connection: directory.get_user(connection, name, now))
    if user is None or not (principal.is_admin or _is_self(principal, user)):
        if not principal.is_admin and user is not None:
            raise forbidden("members may read only their own user")
        raise _no_such_user(name)
    return Reply(200, user_document(user))


async def _update_user(admin: Admin, request: Request, name: str) -> Reply:
    """``PATCH``: ``name``, ``role``, ``password`` (null: no login), ``team``
    (null: none). Members may change only their own password."""
    principal = await admin.principal(request)
    document = body(request, _UPDATE_FIELDS)
    current_password = document.pop("current_password", None)
    if not document:
        raise bad_request(f"nothing to update; give some of {', '.join(_FIELDS)}")
    if not principal.is_admin and (set(document) != {"password"} or principal.user != name):
        raise forbidden("members may change only their own password")
    if "password" in document and document["password"] is None and not principal.is_admin:
        raise forbidden("members cannot remove their own password")
    if not principal.is_admin:
        # A stolen API key or session must not turn into a login password.
        await _check_current_password(admin, principal, current_password)
    new_name = name_field(document, "name", required=False)
    if "name" in document and new_name is None:
        raise bad_request("name: cannot be null")
    if "role" in document and document["role"] is None:
        raise bad_request('role: must be "admin" or "member"')
    role = role_field(document)
    team = name_field(document, "team", required=False)
    password_hash = await _password_hash(document)
    now = admin.now()
    token = bearer_token(request.headers)
    keep_session = (
        session_token_hash(token) if token and token.startswith(SESSION_PREFIX) else None
    )
    old_name: list[str] = []

    def update(connection: Connection) -> UserEntry:
        user = _find(connection, name, now)
        old_name.append(user.name)
        changes: dict[str, Any] = {}
        if new_name is not None:
            changes["name"] = new_name
        if role is not None:
            if role != "admin":
                refuse_removing_last_admin(connection, user)
            changes["role"] = role
        if "password" in document:
            changes["password_hash"] = password_hash
            # A new password ends the user's other sessions: whoever knew the
            # old one must not stay logged in.
            identity.delete_user_sessions(connection, user.id, keep_session)
        directory.update_user(connection, user.id, changes)
        if "team" in document:
            directory.set_user_team(
                connection, user.id, existing_team_id(connection, team, now) if team else None, now
            )
        return _find(connection, user.id, now)

    try:
        user = await admin.write(update)
    except StoreConflict:
        raise conflict(f"a user named {new_name!r} exists") from None
    if "password" in document:
        admin.sessions.forget_user_sessions(old_name[0], keep_session)
    await admin.keys_changed()
    return Reply(200, user_document(user))


async def _check_current_password(
    admin: Admin, principal: Principal, current_password: Any
) -> None:
    """A 403 unless ``current_password`` is the member's password now."""
    if not isinstance(current_password, str) or not current_password:
        raise forbidden("current_password: required to change your own password")
    if len(current_password) > MAX_PASSWORD_CHARS:
        raise forbidden("current_password: does not match")
    user_name = str(principal.user)
    found = await admin.read(lambda c: identity.find_user(c, user_name))
    stored = found.password_hash if found is not None else None
    matches = await trio.to_thread.run_sync(
        verify_password, current_password, stored or dummy_hash()
    )
    if stored is None or not matches:
        raise forbidden(
            "current_password: does not match (a user without a password gets one from an admin)"
        )


async def _delete_user(admin: Admin, request: Request, name: str) -> Reply:
    """``DELETE [?force=true]``: refused while the user has live keys unless
    forced; a forced delete removes the keys too."""
    principal = await admin.admin(request)
    is_forced = is_true(query(request).get("force"))
    now = admin.now()

    def delete(connection: Connection) -> UserEntry:
        user = _find(connection, name, now)
        if _is_self(principal, user):
            raise conflict("you cannot delete your own user")
        refuse_removing_last_admin(connection, user)
        if user.live_keys and not is_forced:
            raise live_keys_conflict("user", user.name, user.live_keys, "their")
        directory.delete_user(connection, user.id)
        return user

    user = await admin.write(delete)
    await admin.keys_changed()
    return Reply(200, {**user_document(user), "deleted": True})
