"""Regression tests for defects a tester found in the team features (admin API,
limits, budgets, keys), each through a real gateway."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import attrs
import pytest
import trio

from ccag.auth import cli as keys_cli_module
from ccag.auth.keys import create_key
from ccag.simulator.scenarios import Text
from tests.admin_fixture import Caller, as_admin, login
from tests.e2e_client import assert_error, message_body, post_messages
from tests.gateway_fixture import open_gateway

TIMEOUT = 20


async def error_message(caller: Caller, method: str, path: str, document: object,
                        status: int = 400, error_type: str = "invalid_request_error") -> str:
    reply = await caller.call(method, path, document)
    return str(assert_error(reply, status, error_type)["error"]["message"])


# -- #3: limits and budgets for subjects that do not exist --------------------


async def test_limits_and_budgets_refuse_unknown_subjects_and_resolve_key_names(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)

            message = await error_message(admin, "PUT", "/admin/limits/team/nosuch", {"rpm": 5})
            assert "team 'nosuch' does not exist" in message
            message = await error_message(admin, "PUT", "/admin/limits/key/nokey", {"rpm": 5})
            assert "key 'nokey' does not exist" in message
            for scope in ("team", "user"):
                message = await error_message(admin, "POST", "/admin/budgets", {
                    "scope": scope, "name": "ghost", "period": "daily",
                    "limit_usd": 1, "policy": "notify",
                })
                assert f"{scope} 'ghost' does not exist" in message
            assert (await admin.ok("GET", "/admin/limits"))["overrides"] == []
            assert (await admin.ok("GET", "/admin/budgets"))["budgets"] == []

            keys = await admin.ok("GET", "/admin/keys")
            key_id = next(k["id"] for k in keys["keys"] if k["name"] == "test-key")
            saved = await admin.ok("PUT", "/admin/limits/key/test-key", {"rpm": 7})
            assert saved["name"] == key_id and saved["rpm"] == 7
            listed = await admin.ok("GET", "/admin/limits")
            assert [(o["scope"], o["name"]) for o in listed["overrides"]] == [("key", key_id)]
            await admin.ok("DELETE", "/admin/limits/key/test-key")
            assert (await admin.ok("GET", "/admin/limits"))["overrides"] == []


# -- #5: out-of-range numbers --------------------------------------------------


async def test_out_of_range_numbers_are_400_naming_the_field(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await admin.ok("POST", "/admin/teams", {"name": "eng"}, 201)

            for since in ("99999999d", "9" * 400 + "d", "99999-01-01"):
                message = await error_message(admin, "GET", f"/admin/spend?since={since}", None)
                assert message.startswith("since:"), message
            for rpm in (1e30, 10**20, 10**400):
                message = await error_message(admin, "PUT", "/admin/limits/team/eng", {"rpm": rpm})
                assert message.startswith("rpm: must be at most"), message
            message = await error_message(admin, "PUT", "/admin/limits/team/eng", {"tpm": 10**10})
            assert message.startswith("tpm:"), message
            budget = {"scope": "team", "name": "eng", "period": "daily",
                      "limit_usd": 1, "policy": "throttle", "throttle_rpm": 10**20}
            message = await error_message(admin, "POST", "/admin/budgets", budget)
            assert message.startswith("throttle_rpm:"), message
            message = await error_message(
                admin, "POST", "/admin/budgets", {**budget, "throttle_rpm": 1, "limit_usd": 1e20}
            )
            assert message.startswith("limit_usd:"), message
            assert (await admin.ok("GET", "/admin/limits"))["overrides"] == []


# -- #15: RFC 3339 echoes ------------------------------------------------------


async def test_spend_since_before_1970_is_refused_and_echoes_have_four_digit_years(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)

            message = await error_message(admin, "GET", "/admin/spend?since=0001-01-01", None)
            assert message.startswith("since:"), message
            report = await admin.ok("GET", "/admin/spend?since=1970-01-01")
            assert report["since"] == "1970-01-01T00:00:00Z"


# -- #4: members shorten expiries, never clear or extend them -------------------


async def test_member_cannot_clear_extend_or_revive_an_expiry(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            member = Caller(running.port, running.key)
            dying = await admin.ok(
                "POST", "/admin/keys", {"name": "short", "user": "tester", "expires_in": 1}, 201
            )
            later = await admin.ok(
                "POST", "/admin/keys", {"name": "later", "user": "tester", "expires_in": 3600}, 201
            )

            for change in ({"expires_at": None}, {"expires_in": 7200}):
                message = await error_message(
                    member, "PATCH", "/admin/keys/later", change, 403, "permission_error"
                )
                assert "cannot" in message and "expiry" in message
            shortened = await member.ok("PATCH", "/admin/keys/later", {"expires_in": 600})
            assert shortened["expires_at"] < later["expires_at"]

            await trio.sleep(1.2)
            message = await error_message(
                member, "PATCH", "/admin/keys/short", {"expires_at": None}, 403, "permission_error"
            )
            assert "expired" in message
            reply = await Caller(running.port, dying["key"]).call("GET", "/admin/keys")
            assert_error(reply, 401, "authentication_error")

            revived = await admin.ok("PATCH", "/admin/keys/short", {"expires_at": None})
            assert revived["status"] == "active"


# -- #6: a password change ends other sessions; members give the old one ------


async def test_password_change_needs_the_current_one_and_ends_other_sessions(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await admin.ok("POST", "/admin/users", {"name": "alice", "password": "alice-password-1"}, 201)
            alice_key = (await admin.ok("POST", "/admin/keys", {"name": "a", "user": "alice"}, 201))["key"]
            with_key = Caller(running.port, alice_key)
            first = Caller(running.port, await login(running.port, "alice", "alice-password-1"))
            second = Caller(running.port, await login(running.port, "alice", "alice-password-1"))

            for document in (
                {"password": "stolen-password-1"},
                {"password": "stolen-password-1", "current_password": "wrong-password-1"},
            ):
                message = await error_message(
                    with_key, "PATCH", "/admin/users/alice", document, 403, "permission_error"
                )
                assert message.startswith("current_password:"), message
            await second.ok("GET", "/admin/users/alice")

            await first.ok("PATCH", "/admin/users/alice", {
                "password": "alice-password-2", "current_password": "alice-password-1",
            })
            await first.ok("GET", "/admin/users/alice")
            reply = await second.call("GET", "/admin/users/alice")
            assert_error(reply, 401, "authentication_error")
            await login(running.port, "alice", "alice-password-2")

            # An admin resetting alice's password needs no current one, and
            # ends all of alice's sessions; the admin's own stays.
            await admin.ok("PATCH", "/admin/users/alice", {"password": "alice-password-3"})
            assert_error(await first.call("GET", "/admin/users/alice"), 401, "authentication_error")
            await admin.ok("GET", "/admin/users/alice")


# -- #7 and #13: budget amounts keep their digits; a refusal names its budget ---


def budget(name: str, period: str, limit_usd: float, policy: str, **more: object) -> dict[str, object]:
    return {"scope": "user", "name": name, "period": period, "limit_usd": limit_usd,
            "policy": policy, **more}


async def test_tiny_budgets_keep_their_digits_in_messages_and_headers(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await admin.ok("POST", "/admin/budgets", budget("tester", "daily", 0.0001, "block"), 201)
            running.simulator.script(Text(), Text())

            first = await post_messages(running.port, running.key, message_body())
            refused = await post_messages(running.port, running.key, message_body())

    assert first.status == 200
    assert first.headers["x-ccag-budget-limit-usd"] == "0.000100000"
    assert first.headers["x-ccag-budget-remaining-usd"] == "0.000100000"
    message = assert_error(refused, 429, "rate_limit_error")["error"]["message"]
    assert "($0.0001)" in message, message
    assert refused.headers["x-ccag-budget-remaining-usd"] == "0.000000000"


async def test_a_throttle_refusal_names_the_throttled_budget(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            # The daily budget is the tightest; the weekly one throttles.
            await admin.ok("POST", "/admin/budgets", budget("tester", "daily", 0.5, "notify"), 201)
            await admin.ok("POST", "/admin/budgets", budget(
                "tester", "weekly", 100, "throttle", throttle_at=0, throttle_rpm=1,
            ), 201)
            running.simulator.script(Text(), Text())

            first = await post_messages(running.port, running.key, message_body())
            refused = await post_messages(running.port, running.key, message_body())

    assert first.status == 200 and first.headers["x-ccag-budget"] == "user:tester:daily"
    message = assert_error(refused, 429, "rate_limit_error")["error"]["message"]
    assert "weekly budget" in message, message
    assert refused.headers["x-ccag-budget"] == "user:tester:weekly"
    assert refused.headers["x-ccag-budget-limit-usd"] == "100.000000000"


# -- #10: what members see of budgets --------------------------------------------


async def test_members_see_budgets_without_webhook_and_team_spend_labelled(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            await admin.ok("POST", "/admin/teams", {"name": "eng"}, 201)
            hook = "http://127.0.0.1:9/secret-token"
            await admin.ok("POST", "/admin/budgets", {
                "scope": "team", "name": "eng", "period": "daily", "limit_usd": 5,
                "policy": "notify", "webhook_url": hook,
            }, 201)
            await admin.ok("POST", "/admin/users", {"name": "erin", "team": "eng"}, 201)
            await admin.ok("POST", "/admin/budgets", budget("erin", "daily", 1, "notify"), 201)
            erin_key = await running.new_key("erin-key", user="erin", team="eng")
            member = await Caller(running.port, erin_key).ok("GET", "/admin/budgets")
            as_admin_view = await admin.ok("GET", "/admin/budgets")

    assert hook not in str(member)
    by_scope = {b["scope"]: b for b in member["budgets"]}
    assert set(by_scope) == {"team", "user"}
    assert "spent_usd" not in by_scope["team"] and by_scope["team"]["team_spent_usd"] == 0
    assert by_scope["user"]["spent_usd"] == 0
    assert [b["webhook_url"] for b in as_admin_view["budgets"]] == [hook, None]


# -- #11: the offline key CLI checks what the API checks ------------------------


def keys_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="ccag")
    keys_cli_module.register(parser.add_subparsers())
    args = parser.parse_args(["keys", *argv])
    status = args.func(args)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.delenv("CCAG_CONFIG", raising=False)
    monkeypatch.delenv("CCAG_STORE", raising=False)
    return str(tmp_path / "ccag.sqlite3")


@pytest.mark.parametrize("argv", [
    ("",), ("a b",), ("caf\u00e9",), ("a/b",),
    ("ok", "--user", "has space"), ("ok", "--team", "x/y"),
    ("ok", "--expires-in", "1e12"), ("ok", "--expires-in", "3e9"), ("ok", "--expires-in", "3651"),
])
def test_keys_create_refuses_what_the_api_refuses(
    capsys: pytest.CaptureFixture[str], store_path: str, argv: tuple[str, ...]
) -> None:
    status, out, err = keys_cli(capsys, "create", *argv, "--store", store_path)

    assert status == 2 and out == ""
    assert "not a valid name" in err or "--expires-in" in err, err
    assert not os.path.exists(store_path)


def test_keys_list_and_revoke_refuse_a_missing_store(
    capsys: pytest.CaptureFixture[str], store_path: str
) -> None:
    for argv in (("list",), ("revoke", "some-key")):
        status, _, err = keys_cli(capsys, *argv, "--store", store_path)
        assert status == 1 and f"no store at {store_path}" in err
    assert not os.path.exists(store_path)
    assert keys_cli(capsys, "create", "fine", "--expires-in", "3650", "--store", store_path)[0] == 0


async def test_listings_survive_a_stored_expiry_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    far = time.time() + 3e9 * 86400  # year 8 million, as an unchecked CLI once stored
    with trio.fail_after(TIMEOUT):
        async with open_gateway(tmp_path) as running:
            await create_key(running.gateway.store, "far", user="tester", expires_at=far)
            admin = await as_admin(running.port)
            listed = await admin.ok("GET", "/admin/keys")
    shown = next(k for k in listed["keys"] if k["name"] == "far")
    assert shown["status"] == "active" and str(int(far)) in shown["expires_at"]


# -- #14: the live view's endpoint series ----------------------------------------


def test_requests_that_reached_no_endpoint_are_not_an_endpoint_series() -> None:
    from ccag.liveview.aggregates import Rollups
    from tests.test_liveview_hub import event

    rollups = Rollups()
    routed = event(1, 1000.2)
    refused = attrs.evolve(event(2, 1000.4, status=429), endpoint_id=None)
    rollups.add(routed)
    rollups.add(refused)
    summary = rollups.close(1000, None)

    assert summary["requests"] == 2
    assert set(summary["endpoints"]) == {"default"}


async def test_spend_refuses_unknown_query_parameters(tmp_path) -> None:
    from tests.admin_fixture import login
    from tests.e2e_client import request as raw_request

    with trio.fail_after(30):
        async with open_gateway(tmp_path) as running:
            token = await login(running.port)
            reply = await raw_request(
                running.port, "GET", "/admin/spend?by=user&bogus=1",
                headers=[("authorization", f"Bearer {token}")],
            )

    assert reply.status == 400
    assert "bogus" in reply.json()["error"]["message"]
