"""``/admin/keys``: create, list, show, update and revoke API keys.

Admins manage every key. A member (any non-admin session or key) manages
only their own: keys of their user, or, for a team key without a user, the
team's user-less keys. Other keys are answered 404 to members, as if they
did not exist. The key itself appears once, in the create response.

A change takes effect on this gateway at once (its key cache is refreshed
before the answer) and on every gateway sharing the store at its next key
refresh (``key_refresh`` seconds).
"""

from __future__ import annotations

from typing import Any

from ccag.api.admin.common import (
    Admin,
    Reply,
    bad_request,
    body,
    conflict,
    existing_team_id,
    expiry_field,
    forbidden,
    item_route,
    missing_subject,
    name_field,
    not_found,
    query,
    role_field,
)
from ccag.auth.keys import (
    KEY_STATUSES,
    Principal,
    generate_key,
    hash_key,
    key_listing,
    key_prefix,
    key_status,
)
from ccag.server.types import Request
from ccag.store import Connection, StoreConflict, directory, identity
from ccag.store.identity import KeyRecord

PREFIX = "/admin/keys/"
_CREATE_FIELDS = ("name", "user", "team", "role", "expires_in", "expires_at")
_UPDATE_FIELDS = ("name", "user", "team", "role", "expires_in", "expires_at")
# Fields only an admin may change; a member may still name one with the value
# the key already has (see _refuse_member_owner_change).
_OWNER_FIELDS = ("user", "team", "role")


def key_document(record: KeyRecord, now: float) -> dict[str, Any]:
    """A key as the API shows it: the listing plus the key's own role override."""
    return {**key_listing(record, now), "role_override": record.key_role}


def owns(principal: Principal, record: KeyRecord) -> bool:
    """Whether a member may see and manage this key."""
    if principal.is_admin:
        return True
    if principal.user is not None:
        return record.user_name == principal.user
    return record.user_name is None and record.team_name == principal.team


def _no_such_key(name_or_id: str) -> Exception:
    return not_found(f"no key with id or live name {name_or_id[:80]!r}")


def _find(connection: Connection, principal: Principal, name_or_id: str) -> KeyRecord:
    matches = identity.find_keys(connection, name_or_id)
    if not matches or not owns(principal, matches[0]):
        raise _no_such_key(name_or_id)
    return matches[0]


def _user_id(connection: Connection, name: str, now: float) -> tuple[str, str | None]:
    """(id, team name) of an existing user, or a 400 naming the problem."""
    user = directory.get_user(connection, name, now)
    if user is None:
        raise missing_subject("user", name)
    return user.id, user.team


def _reload(connection: Connection, key_id: str) -> KeyRecord:
    """The key as stored now, after this transaction changed it."""
    record = directory.get_key_by_id(connection, key_id)
    assert record is not None, "a key changed in this transaction is missing"
    return record


# -- create -----------------------------------------------------------------


async def create_key(admin: Admin, request: Request) -> Reply:
    """``POST /admin/keys``: ``{"name", "user"?, "team"?, "role"?,
    "expires_in"? | "expires_at"?}`` gives 201 with the key, shown once.

    Without ``team``, a user's key is charged to the user's team; ``"team":
    null`` makes it personal. Without ``user`` or ``team``, the key is the
    caller's own. Members may create keys only for themselves, never with the
    admin role.
    """
    principal = await admin.principal(request)
    document = body(request, _CREATE_FIELDS)
    name = name_field(document, "name", required=True)
    user = name_field(document, "user", required=False)
    team = name_field(document, "team", required=False)
    is_team_given = "team" in document
    role = role_field(document)
    now = admin.now()
    _, expires_at = expiry_field(document, now)

    if not principal.is_admin:
        if role == "admin":
            raise forbidden("members cannot create admin keys")
        if user not in (None, principal.user):
            raise forbidden("members can create keys only for themselves")
        if principal.user is None and team not in (None, principal.team):
            raise forbidden("a team key can create keys only for its own team")
        user = principal.user
        if user is None:
            team, is_team_given = principal.team, True
    elif user is None and team is None:
        if principal.user is None:
            raise bad_request("give the key's owner: user, team or both")
        user = principal.user

    secret = generate_key()

    def insert(connection: Connection) -> KeyRecord:
        user_id = team_id = None
        if user is not None:
            user_id, users_team = _user_id(connection, user, now)
            if not is_team_given and users_team is not None:
                team_id = existing_team_id(connection, users_team, now)
            elif not principal.is_admin and team not in (None, users_team):
                raise forbidden(f"you are not in team {team!r}")
        if team is not None:
            team_id = existing_team_id(connection, team, now)
        key_id = identity.insert_key(
            connection, name=str(name), key_hash=hash_key(secret), key_prefix=key_prefix(secret),
            user_id=user_id, team_id=team_id, role=role, now=now, expires_at=expires_at,
        )
        return _reload(connection, key_id)

    try:
        record = await admin.write(insert)
    except StoreConflict:
        raise conflict(f"a live key named {name!r} exists; revoke it or pick another name") from None
    await admin.keys_changed()
    return Reply(201, {**key_document(record, now), "key": secret})


# -- list and show ----------------------------------------------------------


async def list_keys(admin: Admin, request: Request) -> Reply:
    """``GET /admin/keys[?user=U][&team=T][&status=active|expired|revoked]``."""
    principal = await admin.principal(request)
    params = query(request)
    unknown = sorted(set(params) - {"user", "team", "status"})
    if unknown:
        raise bad_request(f"unknown query parameter(s) {', '.join(unknown)}; use user, team, status")
    status = params.get("status")
    if status is not None and status not in KEY_STATUSES:
        raise bad_request(f"status: must be one of {', '.join(KEY_STATUSES)}")

    records = await admin.read(
        lambda connection: directory.list_keys(
            connection, user=params.get("user"), team=params.get("team")
        )
    )
    now = admin.now()
    shown = [
        key_document(record, now)
        for record in records
        if owns(principal, record) and (status is None or key_status(record, now) == status)
    ]
    return Reply(200, {"keys": shown})


async def key_item(admin: Admin, request: Request) -> Reply:
    """``GET``, ``PATCH``, ``DELETE /admin/keys/{id or name}`` and
    ``POST /admin/keys/{id or name}/revoke``."""
    route, name_or_id = item_route(request, PREFIX, {
        ("GET", None): _show_key,
        ("HEAD", None): _show_key,
        ("PATCH", None): _update_key,
        ("DELETE", None): _revoke_key,
        ("POST", "revoke"): _revoke_key,
    })
    return await route(admin, request, name_or_id)


async def _show_key(admin: Admin, request: Request, name_or_id: str) -> Reply:
    principal = await admin.principal(request)
    record = await admin.read(lambda connection: _find(connection, principal, name_or_id))
    return Reply(200, key_document(record, admin.now()))


# -- update -----------------------------------------------------------------


async def _update_key(admin: Admin, request: Request, name_or_id: str) -> Reply:
    """``PATCH``: any of ``name``, ``expires_in``/``expires_at`` (null: never),
    and, for admins, ``role`` (null: the owner's), ``user``, ``team`` (null:
    none; a key keeps at least one owner)."""
    principal = await admin.principal(request)
    document = body(request, _UPDATE_FIELDS)
    if not document:
        raise bad_request(f"nothing to update; give some of {', '.join(_UPDATE_FIELDS)}")
    now = admin.now()
    new_name = name_field(document, "name", required=False)
    if "name" in document and new_name is None:
        raise bad_request("name: cannot be null")
    has_expiry, expires_at = expiry_field(document, now)
    role = role_field(document)
    user = name_field(document, "user", required=False)
    team = name_field(document, "team", required=False)

    def update(connection: Connection) -> KeyRecord:
        record = _find(connection, principal, name_or_id)
        if not principal.is_admin:
            _refuse_member_owner_change(record, document, {"user": user, "team": team, "role": role})
        if record.revoked_at is not None:
            raise conflict(f"key {record.name!r} is revoked; create a new key instead")
        changes: dict[str, Any] = {}
        if new_name is not None:
            changes["name"] = new_name
        if has_expiry:
            if not principal.is_admin:
                _refuse_member_expiry_change(record, expires_at, now)
            changes["expires_at"] = expires_at
        if "role" in document:
            changes["role"] = role
        if "user" in document:
            changes["user_id"] = _user_id(connection, user, now)[0] if user else None
        if "team" in document:
            changes["team_id"] = existing_team_id(connection, team, now) if team else None
        final_user = user if "user" in document else record.user_name
        final_team = team if "team" in document else record.team_name
        if final_user is None and final_team is None:
            raise bad_request("a key needs an owner: it cannot be left with neither user nor team")
        directory.update_key(connection, record.id, changes)
        return _reload(connection, record.id)

    try:
        record = await admin.write(update)
    except StoreConflict:
        raise conflict(f"a live key named {new_name!r} exists; pick another name") from None
    await admin.keys_changed()
    return Reply(200, key_document(record, now))


def _refuse_member_owner_change(
    record: KeyRecord, document: dict[str, Any], wanted: dict[str, str | None]
) -> None:
    """A 403 if a member's update would change a key's user, team or role.

    Naming one of them with the value the key already has changes nothing, so
    it is accepted (``role`` is the key's own override, null when it has none).
    """
    current = {"user": record.user_name, "team": record.team_name, "role": record.key_role}
    refused = [
        field for field in _OWNER_FIELDS if field in document and wanted[field] != current[field]
    ]
    if refused:
        raise forbidden(f"members cannot change {', '.join(refused)} of a key")


def _refuse_member_expiry_change(record: KeyRecord, expires_at: float | None, now: float) -> None:
    """A 403 unless a member's expiry change only shortens a key's life.

    An expiry may have been set by an admin: a member may bring it closer, or
    set one on a key that has none, but never clear it, move it later, or
    revive a key that has expired.
    """
    if record.expires_at is None:
        return
    if record.expires_at <= now:
        raise forbidden(f"key {record.name!r} has expired; members cannot revive it")
    if expires_at is None:
        raise forbidden("members cannot clear a key's expiry; only an admin can")
    if expires_at > record.expires_at:
        raise forbidden("members cannot extend a key's expiry; only an admin can")


# -- revoke -----------------------------------------------------------------


async def _revoke_key(admin: Admin, request: Request, name_or_id: str) -> Reply:
    """Revoke: refused everywhere within one key refresh."""
    principal = await admin.principal(request)
    now = admin.now()

    def revoke(connection: Connection) -> KeyRecord:
        record = _find(connection, principal, name_or_id)
        if not identity.revoke_key(connection, record.id, now):
            raise conflict(f"key {record.name!r} was already revoked")
        return _reload(connection, record.id)

    record = await admin.write(revoke)
    await admin.keys_changed()
    return Reply(200, key_document(record, now))
