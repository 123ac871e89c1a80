"""A member may name a key's user, team or role with the value it already has."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.admin_fixture import Caller, as_admin, login
from tests.e2e_client import assert_error
from tests.gateway_fixture import open_gateway

TIMEOUT = 20


async def test_a_member_setting_a_key_field_to_its_current_value_is_accepted(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            for team in ("eng", "ops"):
                await admin.ok("POST", "/admin/teams", {"name": team}, 201)
            await admin.ok("POST", "/admin/users", {
                "name": "alice", "team": "eng", "password": "alice-password-123",
            }, 201)
            member = Caller(running.port, await login(running.port, "alice", "alice-password-123"))
            created = await member.ok("POST", "/admin/keys", {"name": "alice-1"}, 201)
            before = await member.ok("GET", "/admin/keys/alice-1")

            same_team = await member.ok("PATCH", "/admin/keys/alice-1", {"team": "eng"})
            same_owner = await member.ok(
                "PATCH", "/admin/keys/alice-1", {"user": "alice", "team": "eng", "role": None}
            )
            renamed = await member.ok(
                "PATCH", "/admin/keys/alice-1", {"name": "alice-2", "team": "eng"}
            )
            refusals = [
                await member.call("PATCH", "/admin/keys/alice-2", change)
                for change in ({"team": "ops"}, {"team": None}, {"role": "member"},
                               {"user": "tester"})
            ]
            after = await member.ok("GET", "/admin/keys/alice-2")

    assert created["team"] == "eng"
    assert same_team == before and same_owner == before
    assert (renamed["name"], renamed["user"], renamed["team"]) == ("alice-2", "alice", "eng")
    messages = [assert_error(reply, 403, "permission_error")["error"]["message"]
                for reply in refusals]
    assert messages == [
        "members cannot change team of a key",
        "members cannot change team of a key",
        "members cannot change role of a key",
        "members cannot change user of a key",
    ]
    assert (after["team"], after["user"], after["role_override"]) == ("eng", "alice", None)
