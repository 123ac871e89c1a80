"""Routing over several endpoints: strategies, health, failover, geography."""

from __future__ import annotations

import collections

import trio

from ccag.bedrock.endpoints import EndpointSpec
from ccag.bedrock.routing import HealthBoard, RoundRobin, eligible, rendezvous_order
from ccag.simulator import Fail, StreamException, Text
from tests.e2e_client import assert_error, message_body, post_messages
from tests.endpoints_fixture import SimEndpoint, open_endpoints

TIMEOUT_S = 30

THREE_US = [
    SimEndpoint("east", "us-east-1", priority=10),
    SimEndpoint("east2", "us-east-2", priority=20),
    SimEndpoint("west", "us-west-2", priority=30),
]


def spec(endpoint_id: str, prefix: str = "us", priority: int = 100, weight: int = 1) -> EndpointSpec:
    return EndpointSpec(id=endpoint_id, region="us-east-1", geo_prefix=prefix, priority=priority, weight=weight)


# -- pure parts ------------------------------------------------------------


def test_health_cooldown_doubles_and_success_resets() -> None:
    board = HealthBoard(base_cooldown=2.0, max_cooldown=10.0)
    assert board.record_failure("a", "m", "throttled", 0.0) == 2.0
    assert not board.is_healthy("a", "m", 1.0)
    assert board.is_healthy("a", "other-model", 1.0)
    assert board.record_failure("a", "m", "throttled", 2.5) == 4.0
    assert board.record_failure("a", "m", "server_error", 7.0) == 8.0
    assert board.record_failure("a", "m", "server_error", 16.0) == 10.0
    assert board.is_healthy("a", "m", 26.0)
    board.record_success("a", "m", 0.5, 26.0)
    assert board.record_failure("a", "m", "throttled", 30.0) == 2.0
    view = board.snapshot(30.0)["a"]["m"]
    assert view["throttles"] == 3 and view["errors"] == 5 and view["ttfb_ewma_ms"] == 500.0


def test_round_robin_follows_weights() -> None:
    endpoints = [spec("a", weight=2), spec("b"), spec("c")]
    rotation = RoundRobin()
    firsts = collections.Counter(rotation.order(endpoints)[0].id for _ in range(40))
    assert firsts == {"a": 20, "b": 10, "c": 10}


def test_rendezvous_moves_only_the_users_of_a_removed_endpoint() -> None:
    endpoints = [spec("a"), spec("b"), spec("c")]
    users = [f"user{i}" for i in range(200)]
    before = {user: rendezvous_order(endpoints, user)[0].id for user in users}
    without_b = [e for e in endpoints if e.id != "b"]
    after = {user: rendezvous_order(without_b, user)[0].id for user in users}
    moved = {user for user in users if before[user] != after[user]}
    assert moved == {user for user in users if before[user] == "b"}
    assert set(before.values()) == {"a", "b", "c"}


def test_eligibility_keeps_data_in_its_geography() -> None:
    endpoints = [spec("us1"), spec("eu1", "eu")]
    kept = eligible(endpoints, allowed_ids=(), geography="us", allow_cross_geography=False)
    assert [e.id for e in kept.endpoints] == ["us1"]
    assert kept.refused[0][0] == "eu1" and "cross-geography" in kept.refused[0][1]
    crossing = eligible(endpoints, allowed_ids=(), geography="us", allow_cross_geography=True)
    assert [e.id for e in crossing.endpoints] == ["us1", "eu1"]
    team_only = eligible(endpoints, allowed_ids=("eu1",), geography="eu", allow_cross_geography=False)
    assert [e.id for e in team_only.endpoints] == ["eu1"]


# -- through a gateway -------------------------------------------------------


async def test_throttled_primary_fails_over_then_traffic_returns(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, THREE_US) as running:
            running.router.health.base_cooldown = 0.5
            running.simulators["east"].script(Fail("ThrottlingException"))

            first = await post_messages(running.port, running.key, message_body(stream=True))
            after_throttle = running.calls()
            second = await post_messages(running.port, running.key, message_body())
            while_cooling = running.calls()
            await trio.sleep(0.6)
            third = await post_messages(running.port, running.key, message_body())
            recovered = running.calls()
            view = running.router.snapshot(trio.current_time())

    assert first.status == second.status == third.status == 200
    assert b"message_stop" in first.body
    assert after_throttle == {"east": 1, "east2": 1, "west": 0}
    assert while_cooling == {"east": 1, "east2": 2, "west": 0}
    assert recovered == {"east": 2, "east2": 2, "west": 0}
    east = next(item for item in view if item["id"] == "east")
    assert east["throttles"] == 1 and east["state"] == "healthy"


async def test_throttle_metrics_carry_the_endpoint_that_throttled(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, THREE_US) as running:
            running.simulators["east"].script(Fail("ThrottlingException"))
            reply = await post_messages(running.port, running.key, message_body())
            snapshot = {
                (instrument.name, labels): value
                for instrument, series in running.telemetry.snapshot()
                for labels, value in series
            }

    assert reply.status == 200
    throttles = {labels: v for (name, labels), v in snapshot.items() if name == "ccag.bedrock.throttles.total" and v}
    errors = {labels: v for (name, labels), v in snapshot.items() if name == "ccag.errors.total" and v}
    assert list(throttles.values()) == [1] and "east" in next(iter(throttles))
    assert list(errors.values()) == [1] and "east" in next(iter(errors))


async def test_every_endpoint_throttling_tries_each_once_and_answers_429(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, THREE_US) as running:
            for simulator in running.simulators.values():
                simulator.script(Fail("ThrottlingException"), Fail("ThrottlingException"))
            reply = await post_messages(running.port, running.key, message_body())
            calls = running.calls()

    assert_error(reply, 429, "rate_limit_error")
    assert calls == {"east": 1, "east2": 1, "west": 1}


async def test_validation_error_does_not_fail_over(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, THREE_US) as running:
            running.simulators["east"].script(Fail("ValidationException", message="Malformed input request."))
            reply = await post_messages(running.port, running.key, message_body())
            calls = running.calls()

    assert_error(reply, 400, "invalid_request_error")
    assert calls == {"east": 1, "east2": 0, "west": 0}


async def test_no_failover_after_the_stream_began(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, THREE_US) as running:
            running.simulators["east"].script(StreamException(after_events=2))
            reply = await post_messages(running.port, running.key, message_body(stream=True))
            calls = running.calls()

    assert reply.status == 200
    names = [event.event for event in reply.events()]
    assert names[0] == "message_start" and names[-1] == "error"
    assert calls == {"east": 1, "east2": 0, "west": 0}


async def test_weighted_round_robin_spreads_requests(tmp_path) -> None:
    endpoints = [
        SimEndpoint("east", "us-east-1", weight=2),
        SimEndpoint("east2", "us-east-2"),
        SimEndpoint("west", "us-west-2"),
    ]
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, endpoints, routing={"strategy": "round_robin"}) as running:
            for _ in range(8):
                assert (await post_messages(running.port, running.key, message_body())).status == 200
            calls = running.calls()

    assert calls == {"east": 4, "east2": 2, "west": 2}


async def test_sticky_users_stay_put_while_healthy(tmp_path) -> None:
    routing = {"teams": {"red": {"strategy": "sticky"}}}
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, THREE_US, routing=routing) as running:
            running.router.health.base_cooldown = 0.5
            keys = {f"user{i}": await running.new_key(f"user{i}", team="red") for i in range(6)}

            async def where(user: str) -> str:
                before = running.calls()
                reply = await post_messages(running.port, keys[user], message_body())
                assert reply.status == 200
                after = running.calls()
                (endpoint,) = [
                    name
                    for name, simulator in running.simulators.items()
                    if after[name] != before[name] and simulator.model_requests()[-1].status == 200
                ]
                return endpoint

            homes = {user: await where(user) for user in keys}
            again = {user: await where(user) for user in keys}

            # The first user's endpoint throttles: only that user's traffic moves.
            moved_user = "user0"
            home = homes[moved_user]
            running.simulators[home].script(Fail("ThrottlingException"))
            away = await where(moved_user)
            others = {user: await where(user) for user in keys if homes[user] != home}
            await trio.sleep(0.6)
            back = await where(moved_user)

    assert homes == again
    assert away != home
    assert others == {user: homes[user] for user in others}
    assert back == home


async def test_us_team_is_refused_rather_than_sent_to_eu(tmp_path) -> None:
    endpoints = [SimEndpoint("us1", "us-east-1"), SimEndpoint("eu1", "eu-west-1")]
    routing = {"teams": {"red": {"geography": "us"}}}
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, endpoints, routing=routing) as running:
            key = await running.new_key("alice", team="red")
            running.simulators["us1"].script(Fail("ServiceUnavailableException"))
            refused = await post_messages(running.port, key, message_body())
            calls = running.calls()

            running.router.rules = running.router.rules.__class__(
                strategy="priority", allow_cross_geography=True, teams=running.router.rules.teams
            )
            running.simulators["us1"].script(Fail("ServiceUnavailableException"))
            allowed = await post_messages(running.port, key, message_body())
            calls_allowed = running.calls()

    document = assert_error(refused, 503, "api_error")
    assert "eu1" in document["error"]["message"] and "cross-geography" in document["error"]["message"]
    assert calls == {"us1": 1, "eu1": 0}
    assert allowed.status == 200
    assert calls_allowed["eu1"] == 1


async def test_failover_reresolves_the_model_for_each_prefix(tmp_path) -> None:
    endpoints = [
        SimEndpoint("us1", "us-east-1", priority=1),
        SimEndpoint("glob", "eu-west-1", geo_prefix="global", priority=2),
    ]
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(
            tmp_path, endpoints, routing={"allow_cross_geography": True}
        ) as running:
            running.simulators["us1"].script(Fail("InternalServerException"))
            reply = await post_messages(running.port, running.key, message_body("claude-sonnet-4-5"))
            sent = [r.model_id for sim in running.simulators.values() for r in sim.model_requests()]

    assert reply.status == 200
    assert sent[0].startswith("us.anthropic.") and sent[1].startswith("global.anthropic.")


async def test_scripted_text_answers_through_the_second_endpoint(tmp_path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, THREE_US) as running:
            running.simulators["east"].script(Fail("ThrottlingException"))
            running.simulators["east2"].script(Text("from east2"))
            reply = await post_messages(running.port, running.key, message_body())

    assert reply.json()["content"][0]["text"] == "from east2"
