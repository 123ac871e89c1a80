"""The /admin API through a real gateway: keys, users, teams, members' view."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio

from tests.admin_fixture import Caller, as_admin, auth_failures, login
from tests.e2e_client import assert_error, request
from tests.gateway_fixture import RunningGateway, open_gateway

TIMEOUT = 20


async def models_status(running: RunningGateway, key: str) -> int:
    """What the hot path says about a key (``GET /v1/models`` uses the cache)."""
    reply = await request(running.port, "GET", "/v1/models", headers=[("x-api-key", key)])
    return reply.status


async def refusal_reason(running: RunningGateway, key: str) -> str:
    reply = await request(running.port, "GET", "/v1/models", headers=[("x-api-key", key)])
    document = assert_error(reply, 401, "authentication_error")
    return str(document["error"]["message"])


async def make_team_and_member(admin: Caller, team: str = "eng", user: str = "alice") -> None:
    await admin.ok("POST", "/admin/teams", {"name": team}, 201)
    await admin.ok(
        "POST", "/admin/users",
        {"name": user, "team": team, "password": f"{user}-password-123"}, 201,
    )


# -- keys -------------------------------------------------------------------


async def test_admin_key_create_shows_the_key_once_and_it_works(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await make_team_and_member(admin)

            created = await admin.ok(
                "POST", "/admin/keys", {"name": "laptop", "user": "alice", "expires_in": 3600}, 201
            )
            assert created["key"].startswith("sk-ccag-")
            assert created["user"] == "alice" and created["team"] == "eng"
            assert created["status"] == "active" and created["role"] == "member"
            assert created["prefix"] == created["key"][: len(created["prefix"])]
            expires = time.mktime(time.strptime(created["expires_at"], "%Y-%m-%dT%H:%M:%SZ"))
            assert abs(expires - time.timezone - (time.time() + 3600)) < 120

            assert await models_status(running, created["key"]) == 200
            shown = await admin.ok("GET", f"/admin/keys/{created['id']}")
            listed = await admin.ok("GET", "/admin/keys")
            assert "key" not in shown and shown["name"] == "laptop"
            assert [k["name"] for k in listed["keys"]] == ["test-key", "laptop"]
            assert all("key" not in k and created["key"] not in str(k) for k in listed["keys"])
            by_team = await admin.ok("GET", "/admin/keys?team=eng")
            assert [k["name"] for k in by_team["keys"]] == ["laptop"]


async def test_admin_key_create_defaults_and_team_keys(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await make_team_and_member(admin)

            own = await admin.ok("POST", "/admin/keys", {"name": "mine"}, 201)
            personal = await admin.ok(
                "POST", "/admin/keys", {"name": "solo", "user": "alice", "team": None}, 201
            )
            team_key = await admin.ok("POST", "/admin/keys", {"name": "ci", "team": "eng"}, 201)
            assert (own["user"], own["team"], own["role"]) == ("admin", None, "admin")
            assert (personal["user"], personal["team"]) == ("alice", None)
            assert (team_key["user"], team_key["team"]) == (None, "eng")
            assert await models_status(running, team_key["key"]) == 200


async def test_admin_key_create_refuses_bad_input_with_a_message(tmp_path: Path) -> None:
    cases: list[tuple[Any, int, str]] = [
        ({"name": "k", "team": "nope"}, 400, "team 'nope' does not exist"),
        ({"name": "k", "user": "nobody"}, 400, "user 'nobody' does not exist"),
        ({"name": "test-key", "user": "tester"}, 409, "live key named 'test-key' exists"),
        ({"name": 5, "user": "tester"}, 400, "name: must be a string"),
        ({"user": "tester"}, 400, "name: required"),
        ({"name": "bad name!", "user": "tester"}, 400, "is not a valid name"),
        ({"name": "k", "user": "tester", "expires_in": -5}, 400, "expires_in: must be a positive"),
        ({"name": "k", "user": "tester", "expires_in": "30d"}, 400, "expires_in: must be a positive"),
        ({"name": "k", "user": "tester", "expires_in": True}, 400, "expires_in"),
        ({"name": "k", "user": "tester", "expires_at": "2001-01-01T00:00:00Z"}, 400, "in the past"),
        ({"name": "k", "user": "tester", "expires_at": "tomorrow"}, 400, "not an RFC 3339"),
        ({"name": "k", "user": "tester", "expires_at": "2099-01-01T00:00:00"}, 400, "time zone"),
        ({"name": "k", "user": "tester", "expires_in": 9, "expires_at": None}, 400, "not both"),
        ({"name": "k", "user": "tester", "role": "root"}, 400, 'role: must be "admin"'),
        ({"name": "k", "user": "tester", "colour": "red"}, 400, "unknown field(s) colour"),
        (["name"], 400, "must be a JSON object"),
    ]
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            for document, status, message in cases:
                reply = await admin.call("POST", "/admin/keys", document)
                error_type = "invalid_request_error"
                assert_error(reply, status, error_type)
                assert message in reply.json()["error"]["message"], (document, reply.body)

            malformed = await admin.call("POST", "/admin/keys", raw=b'{"name": ')
            assert "not valid JSON" in assert_error(malformed, 400, "invalid_request_error")[
                "error"]["message"]
            listed = await admin.ok("GET", "/admin/keys")
            assert [k["name"] for k in listed["keys"]] == ["test-key"]


async def test_admin_key_update_changes_name_expiry_role_and_owner(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await make_team_and_member(admin)
            created = await admin.ok("POST", "/admin/keys", {"name": "k1", "user": "alice"}, 201)
            key = created["key"]

            renamed = await admin.ok("PATCH", "/admin/keys/k1", {"name": "k2", "expires_in": 60})
            assert renamed["name"] == "k2" and renamed["expires_at"] is not None
            cleared = await admin.ok("PATCH", f"/admin/keys/{created['id']}", {"expires_at": None})
            assert cleared["expires_at"] is None

            # An admin role override opens the admin API to the key at once.
            assert (await Caller(running.port, key).call("GET", "/admin/users")).status == 403
            promoted = await admin.ok("PATCH", "/admin/keys/k2", {"role": "admin"})
            assert promoted["role"] == "admin" and promoted["role_override"] == "admin"
            assert (await Caller(running.port, key).call("GET", "/admin/users")).status == 200
            back = await admin.ok("PATCH", "/admin/keys/k2", {"role": None})
            assert back["role"] == "member" and back["role_override"] is None

            moved = await admin.ok("PATCH", "/admin/keys/k2", {"user": None, "team": "eng"})
            assert (moved["user"], moved["team"]) == (None, "eng")
            orphan = await admin.call("PATCH", "/admin/keys/k2", {"team": None})
            assert "neither user nor team" in assert_error(orphan, 400, "invalid_request_error")[
                "error"]["message"]
            taken = await admin.call("PATCH", "/admin/keys/k2", {"name": "test-key"})
            assert_error(taken, 409, "invalid_request_error")
            unknown_team = await admin.call("PATCH", "/admin/keys/k2", {"team": "ops"})
            assert_error(unknown_team, 400, "invalid_request_error")
            empty = await admin.call("PATCH", "/admin/keys/k2", {})
            assert "nothing to update" in assert_error(empty, 400, "invalid_request_error")[
                "error"]["message"]
            missing = await admin.call("PATCH", "/admin/keys/nope", {"name": "x"})
            assert_error(missing, 404, "not_found_error")
            assert await models_status(running, key) == 200


async def test_admin_key_revoke_is_effective_at_once(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            first = await admin.ok("POST", "/admin/keys", {"name": "one", "user": "tester"}, 201)
            second = await admin.ok("POST", "/admin/keys", {"name": "two", "user": "tester"}, 201)

            revoked = await admin.ok("DELETE", "/admin/keys/one")
            assert revoked["status"] == "revoked" and revoked["revoked_at"] is not None
            assert "has been revoked" in await refusal_reason(running, first["key"])
            await admin.ok("POST", f"/admin/keys/{second['id']}/revoke")
            assert "has been revoked" in await refusal_reason(running, second["key"])

            again = await admin.call("DELETE", f"/admin/keys/{first['id']}")
            assert "already revoked" in assert_error(again, 409, "invalid_request_error")[
                "error"]["message"]
            by_name = await admin.call("DELETE", "/admin/keys/one")
            assert_error(by_name, 404, "not_found_error")
            update = await admin.call("PATCH", f"/admin/keys/{first['id']}", {"name": "x"})
            assert_error(update, 409, "invalid_request_error")
            # A revoked key's name is free again.
            await admin.ok("POST", "/admin/keys", {"name": "one", "user": "tester"}, 201)
            revoked_only = await admin.ok("GET", "/admin/keys?status=revoked")
            assert {k["id"] for k in revoked_only["keys"]} == {first["id"], second["id"]}


async def test_admin_expired_key_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            created = await admin.ok(
                "POST", "/admin/keys", {"name": "brief", "user": "tester", "expires_in": 600}, 201
            )
            running.gateway.services.wall_clock = lambda: time.time() + 601
            assert "expired at" in await refusal_reason(running, created["key"])
            expired = await admin.ok("GET", "/admin/keys?status=expired")
            assert [k["name"] for k in expired["keys"]] == ["brief"]
            renewed = await admin.ok("PATCH", "/admin/keys/brief", {"expires_in": 3600})
            assert renewed["status"] == "active"
            assert await models_status(running, created["key"]) == 200


# -- users ------------------------------------------------------------------


async def test_admin_users_create_list_update(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await admin.ok("POST", "/admin/teams", {"name": "eng"}, 201)
            bob = await admin.ok("POST", "/admin/users", {"name": "bob"}, 201)
            assert (bob["role"], bob["team"], bob["can_log_in"]) == ("member", None, False)

            for document, status, message in [
                ({"name": "bob"}, 409, "a user named 'bob' exists"),
                ({"name": "carol", "team": "ops"}, 400, "team 'ops' does not exist"),
                ({"name": "carol", "password": "short"}, 400, "password: must be 12"),
                ({"name": "carol", "role": "owner"}, 400, "role"),
                ({"name": "", "role": "member"}, 400, "not a valid name"),
            ]:
                reply = await admin.call("POST", "/admin/users", document)
                assert_error(reply, status, "invalid_request_error")
                assert message in reply.json()["error"]["message"], reply.body

            updated = await admin.ok(
                "PATCH", "/admin/users/bob",
                {"name": "robert", "team": "eng", "password": "robert-password-1"},
            )
            assert (updated["name"], updated["team"], updated["can_log_in"]) == (
                "robert", "eng", True)
            await login(running.port, "robert", "robert-password-1")
            listed = await admin.ok("GET", "/admin/users")
            assert [u["name"] for u in listed["users"]] == ["admin", "robert", "tester"]
            team = await admin.ok("GET", "/admin/teams/eng")
            assert team["members"] == ["robert"]
            left = await admin.ok("PATCH", "/admin/users/robert", {"team": None})
            assert left["team"] is None
            assert_error(await admin.call("GET", "/admin/users/bob"), 404, "not_found_error")
            assert_error(
                await admin.call("PATCH", "/admin/users/robert", {"name": "tester"}),
                409, "invalid_request_error",
            )


async def test_admin_users_keep_one_admin_and_refuse_self_deletion(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            demote = await admin.call("PATCH", "/admin/users/admin", {"role": "member"})
            assert "last admin" in assert_error(demote, 409, "invalid_request_error")[
                "error"]["message"]
            delete_self = await admin.call("DELETE", "/admin/users/admin")
            assert "your own user" in assert_error(delete_self, 409, "invalid_request_error")[
                "error"]["message"]

            await admin.ok(
                "POST", "/admin/users",
                {"name": "root2", "role": "admin", "password": "root2-password-1"}, 201,
            )
            other = Caller(running.port, await login(running.port, "root2", "root2-password-1"))
            await other.ok("PATCH", "/admin/users/admin", {"role": "member"})
            # The demotion reaches the existing session at its next recheck.
            running.gateway.services.wall_clock = lambda: time.time() + 10
            demoted = await admin.call("GET", "/admin/users")
            assert_error(demoted, 403, "permission_error")
            last = await other.call("DELETE", "/admin/users/root2")
            assert_error(last, 409, "invalid_request_error")


async def test_admin_user_delete_needs_force_while_keys_live(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await make_team_and_member(admin)
            created = await admin.ok("POST", "/admin/keys", {"name": "a1", "user": "alice"}, 201)
            session = await login(running.port, "alice", "alice-password-123")

            refused = await admin.call("DELETE", "/admin/users/alice")
            assert "1 live key(s)" in assert_error(refused, 409, "invalid_request_error")[
                "error"]["message"]
            deleted = await admin.ok("DELETE", "/admin/users/alice?force=true")
            assert deleted["deleted"] is True and deleted["name"] == "alice"

            assert "not known" in await refusal_reason(running, created["key"])
            # Sessions go with the user (this gateway cached it: wait out the recheck).
            running.gateway.services.wall_clock = lambda: time.time() + 10
            gone = await Caller(running.port, session).call("GET", "/admin/me")
            assert_error(gone, 401, "authentication_error")
            assert_error(await admin.call("DELETE", "/admin/users/alice"), 404, "not_found_error")


# -- teams ------------------------------------------------------------------


async def test_admin_teams_crud_and_forced_delete(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await make_team_and_member(admin)
            assert_error(
                await admin.call("POST", "/admin/teams", {"name": "eng"}), 409,
                "invalid_request_error",
            )
            assert_error(await admin.call("POST", "/admin/teams", {}), 400, "invalid_request_error")
            renamed = await admin.ok("PATCH", "/admin/teams/eng", {"name": "platform"})
            assert (renamed["name"], renamed["members"]) == ("platform", ["alice"])
            await admin.ok("POST", "/admin/teams", {"name": "ops"}, 201)
            assert_error(
                await admin.call("PATCH", "/admin/teams/ops", {"name": "platform"}), 409,
                "invalid_request_error",
            )
            listed = await admin.ok("GET", "/admin/teams")
            assert [t["name"] for t in listed["teams"]] == ["ops", "platform"]

            team_key = await admin.ok("POST", "/admin/keys", {"name": "ci", "team": "platform"}, 201)
            refused = await admin.call("DELETE", "/admin/teams/platform")
            assert_error(refused, 409, "invalid_request_error")
            await admin.ok("DELETE", "/admin/teams/platform?force=true")
            assert "not known" in await refusal_reason(running, team_key["key"])
            alice = await admin.ok("GET", "/admin/users/alice")
            assert alice["team"] is None
            await admin.ok("DELETE", "/admin/teams/ops")
            assert_error(await admin.call("GET", "/admin/teams/ops"), 404, "not_found_error")


# -- members and credentials --------------------------------------------------


async def test_admin_members_see_and_manage_only_their_own_keys(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await make_team_and_member(admin)
            bobs = await admin.ok("POST", "/admin/keys", {"name": "bobs", "user": "tester"}, 201)
            member = Caller(running.port, await login(running.port, "alice", "alice-password-123"))

            mine = await member.ok("POST", "/admin/keys", {"name": "alice-1"}, 201)
            assert (mine["user"], mine["team"], mine["role"]) == ("alice", "eng", "member")
            listed = await member.ok("GET", "/admin/keys")
            assert [k["name"] for k in listed["keys"]] == ["alice-1"]
            await member.ok("PATCH", "/admin/keys/alice-1", {"name": "alice-2", "expires_in": 99})

            for method, path, document, status in [
                ("POST", "/admin/keys", {"name": "x", "user": "tester"}, 403),
                ("POST", "/admin/keys", {"name": "x", "role": "admin"}, 403),
                ("PATCH", "/admin/keys/alice-2", {"role": "admin"}, 403),
                ("PATCH", "/admin/keys/alice-2", {"user": "tester"}, 403),
                ("GET", f"/admin/keys/{bobs['id']}", None, 404),
                ("DELETE", "/admin/keys/bobs", None, 404),
                ("PATCH", "/admin/keys/bobs", {"name": "mine-now"}, 404),
                ("GET", "/admin/users", None, 403),
                ("POST", "/admin/teams", {"name": "mine"}, 403),
                ("GET", "/admin/users/tester", None, 403),
                ("PATCH", "/admin/users/alice", {"role": "admin"}, 403),
                ("DELETE", "/admin/users/tester", None, 403),
            ]:
                reply = await member.call(method, path, document)
                assert reply.status == status, (method, path, reply.body)
                assert reply.json()["type"] == "error"

            me = await member.ok("GET", "/admin/users/alice")
            assert me["name"] == "alice"
            await member.ok(
                "PATCH", "/admin/users/alice",
                {"password": "a-new-password-1", "current_password": "alice-password-123"},
            )
            await login(running.port, "alice", "a-new-password-1")

            # The member's API key gives the same view as the session.
            with_key = Caller(running.port, mine["key"])
            listed = await with_key.ok("GET", "/admin/keys")
            assert [k["name"] for k in listed["keys"]] == ["alice-2"]
            await with_key.ok("DELETE", "/admin/keys/alice-2")
            assert await models_status(running, bobs["key"]) == 200
            # Admin-only routes count not_admin; the 403s on own-resource rules do not.
            assert auth_failures(running.telemetry) == {"not_admin": 3}


async def test_admin_refuses_missing_and_bad_credentials_and_counts_them(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            anonymous = await Caller(running.port, None).call("GET", "/admin/keys")
            assert_error(anonymous, 401, "authentication_error")
            bogus = await Caller(running.port, "ccag-session-" + "x" * 43).call("GET", "/admin/keys")
            assert_error(bogus, 401, "authentication_error")
            wrong = await request(
                running.port, "POST", "/auth/login",
                headers=[("content-type", "application/json")],
                body=b'{"username": "admin", "password": "wrong-password"}',
            )
            assert_error(wrong, 401, "authentication_error")
            failures = auth_failures(running.telemetry)
            assert failures["missing_key"] == 1
            assert failures["login_failed"] == 1
            assert sum(failures.values()) == 3


async def test_admin_unknown_routes_are_json_404s(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            for method, path in [
                ("GET", "/admin/keys/a/b/c"),
                ("POST", "/admin/keys/test-key/explode"),
                ("PUT", "/admin/keys"),
                ("GET", "/admin/users/admin/extra"),
                ("GET", "/admin/nothing"),
            ]:
                assert_error(await admin.call(method, path), 404, "not_found_error")
            me = await admin.ok("GET", "/admin/me")
            assert (me["user"], me["role"]) == ("admin", "admin")
            listed = await admin.ok("GET", "/admin/keys/")
            assert [k["name"] for k in listed["keys"]] == ["test-key"]
