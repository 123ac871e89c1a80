"""Endpoint definitions, the default endpoint, and the admin API over them."""

from __future__ import annotations

import json
import pathlib

import pytest
import trio

from ccag.bedrock.endpoints import (
    REDACTED,
    endpoint_document,
    parse_endpoint,
    parse_endpoints,
    parse_routing,
    redacted,
)
from ccag.config import load_config
from ccag.errors import ConfigError
from ccag.simulator import Fail, open_simulator
from tests.admin_fixture import as_admin
from tests.e2e_client import flat_snapshot, message_body, post_messages
from tests.endpoints_fixture import SimEndpoint, open_endpoints
from tests.gateway_fixture import open_gateway

TIMEOUT_S = 30

TOML = """
[[endpoints]]
id = "use1"
region = "us-east-1"
priority = 10
weight = 3

[endpoints.credentials]
type = "assume_role"
role_arn = "arn:aws:iam::111122223333:role/bedrock"
external_id = "x"

[endpoints.models]
"claude-sonnet-4-5" = "arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/abc"

[[endpoints]]
id = "euw1"
region = "eu-west-1"
api = "mantle"
credentials = { type = "api_key", api_key_env = "EU_BEDROCK_KEY" }

[routing]
strategy = "sticky"

[routing.teams.red]
endpoints = ["use1"]
geography = "us"
"""


def test_toml_file_defines_endpoints_and_routing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ccag.toml"
    path.write_text(TOML)
    config = load_config({}, environ={}, file=path)
    specs = parse_endpoints(config.endpoints)
    rules = parse_routing(config.routing)

    assert [s.id for s in specs] == ["use1", "euw1"]
    assert specs[0].geo_prefix == "us" and specs[1].geo_prefix == "eu"
    assert specs[0].credentials.type == "assume_role" and specs[0].weight == 3
    assert specs[0].models["claude-sonnet-4-5"].endswith("application-inference-profile/abc")
    assert specs[1].runtime_url() == "https://bedrock-mantle.eu-west-1.api.aws"
    assert specs[0].control_plane_url() == "https://bedrock.us-east-1.amazonaws.com"
    assert rules.strategy == "sticky" and rules.teams["red"].endpoints == ("use1",)


def test_endpoints_from_environment_json() -> None:
    environ = {"CCAG_ENDPOINTS": json.dumps([{"id": "a", "region": "ap-northeast-1"}])}
    (spec,) = parse_endpoints(load_config({}, environ=environ).endpoints)
    assert spec.geo_prefix == "jp" and spec.api == "invoke" and spec.credentials.type == "chain"


@pytest.mark.parametrize(
    ("table", "complaint"),
    [
        ({"region": "us-east-1"}, "id"),
        ({"id": "a b", "region": "us-east-1"}, "id"),
        ({"id": "a"}, "region is required"),
        ({"id": "a", "region": "us-east-1", "api": "grpc"}, "api"),
        ({"id": "a", "region": "us-east-1", "geo_prefix": "mars"}, "geo_prefix"),
        ({"id": "a", "region": "us-east-1", "weight": 0}, "weight"),
        ({"id": "a", "region": "us-east-1", "colour": "red"}, "colour"),
        ({"id": "a", "region": "us-east-1", "credentials": {"type": "static"}}, "access_key_id"),
        ({"id": "a", "region": "us-east-1", "credentials": {"type": "assume_role"}}, "role_arn"),
    ],
)
def test_bad_endpoint_tables_are_refused_by_name(table: dict, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        parse_endpoint(table)


def test_duplicate_ids_and_unknown_team_endpoints_are_refused() -> None:
    with pytest.raises(ConfigError, match="twice"):
        parse_endpoints([{"id": "a", "region": "us-east-1"}, {"id": "a", "region": "us-west-2"}])
    with pytest.raises(ConfigError, match="strategy"):
        parse_routing({"strategy": "random"})


def test_documents_round_trip_and_redact_secrets() -> None:
    table = {
        "id": "a",
        "region": "us-east-1",
        "credentials": {"type": "static", "access_key_id": "AKID", "secret_access_key": "s3cret"},
    }
    spec = parse_endpoint(table)
    assert parse_endpoint(endpoint_document(spec)) == spec
    shown = redacted(endpoint_document(spec))
    assert shown["credentials"]["secret_access_key"] == REDACTED
    assert "s3cret" not in json.dumps(shown)


async def test_without_endpoints_the_default_endpoint_is_the_core_settings(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_gateway(tmp_path) as running:
            router = running.gateway.services.upstream
            reply = await post_messages(running.port, running.key, message_body())
            ids = router.endpoint_ids

    assert reply.status == 200
    assert ids == ["default"]


async def test_admin_sees_health_adds_an_endpoint_and_routes_a_team(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            open_simulator(region="us-west-2", access_key="AKIDSECOND0000000001", secret_key="second") as second,
            open_endpoints(tmp_path, [SimEndpoint("east", "us-east-1")]) as running,
        ):
            admin = await as_admin(running.port)
            running.simulators["east"].script(Fail("ThrottlingException"))
            throttled = await post_messages(running.port, running.key, message_body())
            listing = await admin.ok("GET", "/admin/endpoints")

            added = await admin.ok("POST", "/admin/endpoints", {
                "id": "west",
                "region": "us-west-2",
                "url": second.url,
                "control_url": second.url,
                "credentials": {"type": "static", "access_key_id": second.access_key,
                                "secret_access_key": second.secret_key},
            }, status=201)
            routed = await admin.ok("PUT", "/admin/routing/teams/blue", {"endpoints": ["west"]})
            key = await running.new_key("bob", team="blue")
            reply = await post_messages(running.port, key, message_body())
            second_calls = len(second.model_requests())
            read_only = await admin.call("DELETE", "/admin/endpoints/east")
            refused = await admin.call("PUT", "/admin/routing/teams/blue", {"endpoints": ["nowhere"]})
            in_use = await admin.call("DELETE", "/admin/endpoints/west")
            await admin.ok("DELETE", "/admin/routing/teams/blue")
            removed = await admin.ok("DELETE", "/admin/endpoints/west")
            remaining = running.router.endpoint_ids

            verdict = {"key": "east/us.anthropic.x", "kind": "beta", "name": "b1", "seconds": 60}
            await admin.ok("POST", "/admin/capabilities", verdict, status=201)
            shown = await admin.ok("GET", "/admin/capabilities")
            await admin.ok("DELETE", "/admin/capabilities?key=east/us.anthropic.x&kind=beta&name=b1")
            after = await admin.ok("GET", "/admin/capabilities")
            member = await post_messages(running.port, running.key, b"", target="/admin/endpoints")

    assert throttled.status == 429
    (east,) = listing["endpoints"]
    assert east["id"] == "east" and east["throttles"] == 1 and east["state"] == "cooling"
    assert east["models"]["claude-sonnet-4-5"]["last_error"] == "throttled"
    assert east["definition"]["credentials"]["secret_access_key"] == REDACTED
    assert added["credentials"]["secret_access_key"] == REDACTED
    assert routed["endpoints"] == ["west"]
    assert reply.status == 200 and second_calls == 1
    assert read_only.status == 409 and refused.status == 400
    assert in_use.status == 409
    assert removed == {"deleted": "west"} and remaining == ["east"]
    assert shown["verdicts"]["east/us.anthropic.x"]["beta"]["b1"] > 50
    assert after["verdicts"] == {}
    assert member.status in (403, 404, 405)


def test_a_stand_in_runtime_url_is_also_the_control_plane() -> None:
    from ccag.bedrock.endpoints import EndpointSpec

    stand_in = EndpointSpec(id="a", region="us-east-1", geo_prefix="us", url="http://127.0.0.1:9/")
    aws_private = EndpointSpec(
        id="b", region="us-east-1", geo_prefix="us",
        url="https://vpce-1.bedrock-runtime.us-east-1.vpce.amazonaws.com",
    )

    assert stand_in.control_plane_url() == "http://127.0.0.1:9"
    assert aws_private.control_plane_url() == "https://bedrock.us-east-1.amazonaws.com"


async def test_an_endpoint_added_at_runtime_has_its_own_metric_label(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            open_simulator(region="us-west-2", access_key="AKIDSECOND0000000001", secret_key="second") as second,
            open_endpoints(tmp_path, [SimEndpoint("east", "us-east-1")]) as running,
        ):
            admin = await as_admin(running.port)
            await admin.ok("POST", "/admin/endpoints", {
                "id": "west",
                "region": "us-west-2",
                "url": second.url,
                "control_url": second.url,
                "credentials": {"type": "static", "access_key_id": second.access_key,
                                "secret_access_key": second.secret_key},
            }, status=201)
            await admin.ok("PUT", "/admin/routing/teams/blue", {"endpoints": ["west"]})
            key = await running.new_key("bob", team="blue")
            second.script(Fail("ThrottlingException"))
            throttled = await post_messages(running.port, key, message_body())
            snapshot = flat_snapshot(running.telemetry)

    assert throttled.status == 429
    errors = {
        dict(labels)["endpoint_id"]: value
        for (name, labels), value in snapshot.items()
        if name == "ccag.errors.total"
    }
    assert errors == {"west": 1}
    throttles = {
        dict(labels)["endpoint_id"]: value
        for (name, labels), value in snapshot.items()
        if name == "ccag.bedrock.throttles.total"
    }
    assert throttles == {"west": 1}
