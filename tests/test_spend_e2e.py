"""Spend, rate limits and budgets through a real gateway and the simulator.

Store-dependent tests run on SQLite and on a throwaway PostgreSQL server
(the one tests/test_store.py starts; CCAG_TEST_POSTGRES=0 leaves it out).
"""

from __future__ import annotations

import calendar
import json
from collections.abc import Iterator
from typing import Any

import h11
import pytest
import trio

from ccag.simulator.scenarios import Text, ToolUse, Usage
from ccag.store import open_store_sync
from tests.admin_fixture import Caller, as_admin, login
from tests.e2e_client import (
    assert_error,
    flat_snapshot,
    message_body,
    post_messages,
    series,
)
from tests.gateway_fixture import open_gateway
from tests.postgres_fixture import BACKENDS, postgres_server  # noqa: F401
from tests.postgres_fixture import fresh_postgres_database as _fresh_postgres_database

# Published prices, USD per million tokens (input, output, cache read, cache
# write 5m): the expectations below are computed from these by hand.
SONNET_4_5 = (3.0, 15.0, 0.3, 3.75)
HAIKU_4_5 = (1.0, 5.0, 0.1, 1.25)

SONNET_USAGE = Usage(
    input_tokens=1000,
    output_tokens=2000,
    cache_read_input_tokens=3000,
    cache_creation_input_tokens=400,
)
HAIKU_USAGE = Usage(input_tokens=10_000, output_tokens=1_000)


def _cost(prices: tuple[float, ...], usage: Usage) -> float:
    tokens = (
        usage.input_tokens or 0,
        usage.output_tokens or 0,
        usage.cache_read_input_tokens,
        usage.cache_creation_input_tokens,
    )
    return sum(count * price for count, price in zip(tokens, prices)) / 1e6


@pytest.fixture(params=BACKENDS)
def store_location(request: Any, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "ccag.sqlite3")
    else:
        yield from _fresh_postgres_database(request.getfixturevalue("postgres_server"))


def _by(document: dict[str, Any], group: str) -> dict[str, float]:
    return {row[group]: row["cost_usd"] for row in document["rows"]}


async def test_spend_by_user_team_model_and_key_matches_the_prices_to_the_cent(
    tmp_path: Any, store_location: str
) -> None:
    with trio.fail_after(60):
        async with open_gateway(
            tmp_path, settings={"store": store_location}
        ) as running:
            alice = await running.new_key("alice-key", user="alice", team="red")
            bob = await running.new_key("bob-key", user="bob", team="blue")
            running.simulator.script(
                Text(usage=SONNET_USAGE),
                Text(usage=SONNET_USAGE),
                ToolUse(name="Read", input={"path": "x"}, usage=HAIKU_USAGE),
            )

            plain = await post_messages(
                running.port, alice, message_body("claude-sonnet-4-5")
            )
            streamed = await post_messages(
                running.port, alice, message_body("claude-sonnet-4-5", stream=True)
            )
            tool = await post_messages(
                running.port, bob, message_body("claude-haiku-4-5")
            )
            assert [plain.status, streamed.status, tool.status] == [200, 200, 200]

            admin = await as_admin(running.port)
            by_user = await admin.ok("GET", "/admin/spend?by=user&since=1d")
            by_team = await admin.ok("GET", "/admin/spend?by=team&since=1d")
            by_model = await admin.ok("GET", "/admin/spend?by=model&since=1d")
            by_key = await admin.ok("GET", "/admin/spend?by=key&since=1d")
            as_alice = await Caller(running.port, alice).ok(
                "GET", "/admin/spend?by=user"
            )

            rows = running.gateway.store.call(
                lambda c: c.query(
                    "SELECT user_name, team_name, key_name, endpoint, requested_model, "
                    "bedrock_model_id, status, input_tokens, output_tokens, cache_read_tokens, "
                    "cache_write_tokens, tool_calls, tool_names, duration_ms, ttft_ms "
                    "FROM spend_records ORDER BY at"
                )
            )

    sonnet = _cost(SONNET_4_5, SONNET_USAGE)
    haiku = _cost(HAIKU_4_5, HAIKU_USAGE)
    assert round(sonnet * 2, 2) != round(haiku, 2)  # the groups can be told apart
    assert {k: round(v, 2) for k, v in _by(by_user, "user").items()} == {
        "alice": round(2 * sonnet, 2),
        "bob": round(haiku, 2),
    }
    assert _by(by_user, "user") == pytest.approx(
        {"alice": 2 * sonnet, "bob": haiku}, abs=1e-9
    )
    assert _by(by_team, "team") == pytest.approx(
        {"red": 2 * sonnet, "blue": haiku}, abs=1e-9
    )
    assert _by(by_model, "model") == pytest.approx(
        {"claude-sonnet-4-5": 2 * sonnet, "claude-haiku-4-5": haiku}, abs=1e-9
    )
    assert _by(by_key, "key") == pytest.approx(
        {"alice-key": 2 * sonnet, "bob-key": haiku}, abs=1e-9
    )
    assert by_user["total_cost_usd"] == pytest.approx(2 * sonnet + haiku, abs=1e-6)
    assert {row["user"]: row["requests"] for row in by_user["rows"]} == {
        "alice": 2,
        "bob": 1,
    }

    # A member sees only their own spend.
    assert list(_by(as_alice, "user")) == ["alice"]

    # One record per call, with its facts and no text.
    assert len(rows) == 3
    first, second, third = rows
    assert first[:5] == ("alice", "red", "alice-key", "messages", "claude-sonnet-4-5")
    assert "claude-sonnet-4-5" in first[5]
    assert first[6:11] == (200, 1000, 2000, 3000, 400)
    assert second[6:11] == (200, 1000, 2000, 3000, 400)
    assert third[6:9] == (200, 10_000, 1_000)
    assert (third[11], third[12]) == (1, "Read")
    assert all(row[13] > 0 and row[14] is not None for row in rows)


async def test_rate_limit_refuses_the_request_past_the_limit_with_retry_after(
    tmp_path: Any,
) -> None:
    with trio.fail_after(30):
        async with open_gateway(tmp_path, settings={"key_rpm_limit": 2}) as running:
            for _ in range(2):
                reply = await post_messages(running.port, running.key, message_body())
                assert reply.status == 200

            refused = await post_messages(running.port, running.key, message_body())

            count_body = message_body()
            counts = [
                await post_messages(
                    running.port,
                    running.key,
                    count_body,
                    target="/v1/messages/count_tokens",
                )
                for _ in range(5)
            ]
            calls = len(running.simulator.model_requests())
            snapshot = flat_snapshot(running.telemetry)

    document = assert_error(refused, 429, "rate_limit_error")
    assert "2 requests per minute" in document["error"]["message"]
    # Two requests a moment ago: the first leaves the window in just under 60 s.
    assert refused.headers["retry-after"] in ("59", "60")
    assert [reply.status for reply in counts] == [200] * 5
    assert calls == 2 + 5  # the refused request never reached Bedrock
    assert snapshot[series("ccag.rate_limits.total")] == 1


async def test_team_limit_override_of_zero_blocks_and_removing_it_unblocks(
    tmp_path: Any,
) -> None:
    with trio.fail_after(30):
        async with open_gateway(tmp_path) as running:
            key = await running.new_key("carol-key", user="carol", team="green")
            admin = await as_admin(running.port)
            await admin.ok("PUT", "/admin/limits/team/green", {"rpm": 0})
            blocked = await post_messages(running.port, key, message_body())
            other_team = await post_messages(running.port, running.key, message_body())
            listing = await admin.ok("GET", "/admin/limits")
            await admin.ok("DELETE", "/admin/limits/team/green")
            unblocked = await post_messages(running.port, key, message_body())

    document = assert_error(blocked, 429, "rate_limit_error")
    assert "team 'green'" in document["error"]["message"]
    assert blocked.headers.get("x-should-retry") == "false"
    assert other_team.status == 200
    assert listing["overrides"] == [
        {"scope": "team", "name": "green", "rpm": 0, "tpm": None}
    ]
    assert unblocked.status == 200


# -- budgets ----------------------------------------------------------------


class WebhookReceiver:
    """A loopback HTTP server collecting JSON POSTs (or never answering)."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.received: list[dict[str, Any]] = []
        self.arrived = trio.Event()
        self.port = 0

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        if not self.answer:
            await trio.sleep_forever()
        connection = h11.Connection(h11.SERVER)
        body = b""
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        self.received.append(json.loads(body))
        self.arrived.set()
        self.arrived = trio.Event()
        await stream.send_all(
            connection.send(h11.Response(status_code=204, headers=[]))
            + connection.send(h11.EndOfMessage())
        )
        await stream.aclose()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


async def test_blocking_budget_refuses_with_429_until_the_next_period_and_notifies(
    tmp_path: Any, store_location: str
) -> None:
    noon = float(calendar.timegm((2030, 1, 15, 12, 0, 0)))
    now = [noon]
    receiver = WebhookReceiver()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve)
            async with open_gateway(
                tmp_path, settings={"store": store_location}
            ) as running:
                running.gateway.services.spend.clock = lambda: now[0]
                key = await running.new_key("dave-key", user="dave", team="red")
                admin = await as_admin(running.port)
                budget = await admin.ok(
                    "POST",
                    "/admin/budgets",
                    {
                        "scope": "team",
                        "name": "red",
                        "period": "daily",
                        "limit_usd": 0.05,
                        "policy": "block",
                        "webhook_url": receiver.url,
                    },
                    status=201,
                )
                running.simulator.script(
                    Text(usage=SONNET_USAGE),
                    Text(usage=SONNET_USAGE),
                    Text(usage=SONNET_USAGE),
                )

                first = await post_messages(running.port, key, message_body())
                second = await post_messages(
                    running.port, key, message_body(stream=True)
                )
                refused = await post_messages(running.port, key, message_body())
                while len(receiver.received) < 2:
                    await receiver.arrived.wait()
                listed = await admin.ok("GET", "/admin/budgets")

                now[0] = noon + 12 * 3600  # midnight: a new day
                next_day = await post_messages(running.port, key, message_body())
            nursery.cancel_scope.cancel()

    sonnet = _cost(SONNET_4_5, SONNET_USAGE)
    assert (
        0.05 * 0.8 > sonnet and 2 * sonnet >= 0.05
    )  # crossing both thresholds at once
    assert first.status == 200
    assert first.headers["x-ccag-budget-remaining-usd"] == "0.050000000"
    assert first.headers["x-ccag-budget-resets-at"] == "2030-01-16T00:00:00Z"
    assert second.status == 200  # the SSE head carries the budget too
    assert float(second.headers["x-ccag-budget-remaining-usd"]) == pytest.approx(
        0.05 - sonnet, abs=1e-9
    )

    document = assert_error(refused, 429, "rate_limit_error")
    message = document["error"]["message"]
    assert "daily budget of team 'red'" in message and "2030-01-16T00:00:00Z" in message
    assert refused.headers["retry-after"] == str(12 * 3600)
    assert refused.headers["x-ccag-budget-remaining-usd"] == "0.000000000"

    assert sorted(notice["threshold"] for notice in receiver.received) == [0.8, 1.0]
    assert {notice["budget_id"] for notice in receiver.received} == {budget["id"]}
    assert listed["budgets"][0]["spent_usd"] == pytest.approx(2 * sonnet, abs=1e-9)

    assert next_day.status == 200
    assert next_day.headers["x-ccag-budget-remaining-usd"] == "0.050000000"
    assert next_day.headers["x-ccag-budget-resets-at"] == "2030-01-17T00:00:00Z"


async def test_a_dead_webhook_receiver_never_delays_requests(tmp_path: Any) -> None:
    receiver = WebhookReceiver(answer=False)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(receiver.serve)
            async with open_gateway(tmp_path) as running:
                admin = await as_admin(running.port)
                await admin.ok(
                    "POST",
                    "/admin/budgets",
                    {
                        "scope": "user",
                        "name": "tester",
                        "period": "monthly",
                        "limit_usd": 0.000001,
                        "policy": "notify",
                        "webhook_url": receiver.url,
                        "thresholds": [0.1, 0.5, 1.0],
                    },
                    status=201,
                )
                durations = []
                for _ in range(4):
                    started = trio.current_time()
                    reply = await post_messages(
                        running.port, running.key, message_body()
                    )
                    durations.append(trio.current_time() - started)
                    assert reply.status == 200
                spend = running.gateway.services.spend
            nursery.cancel_scope.cancel()

    # Each webhook attempt waits 10 s for the silent receiver; requests do not.
    assert max(durations) < 2.0, durations
    assert spend.webhooks.delivered == 0


async def test_graceful_shutdown_writes_buffered_records(tmp_path: Any) -> None:
    path = str(tmp_path / "ccag.sqlite3")
    with trio.fail_after(30):
        async with open_gateway(
            tmp_path, settings={"store": path, "spend_flush_interval": 3600.0}
        ) as running:
            for _ in range(3):
                assert (
                    await post_messages(running.port, running.key, message_body())
                ).status == 200
            buffered = len(running.gateway.services.spend.recorder.pending())

    with open_store_sync(path) as store:
        written = store.call(lambda c: c.query("SELECT COUNT(*) FROM spend_records"))[
            0
        ][0]
    assert (buffered, written) == (3, 3)


async def test_pricing_override_prices_later_calls(tmp_path: Any) -> None:
    with trio.fail_after(30):
        async with open_gateway(tmp_path) as running:
            admin = await as_admin(running.port)
            running.simulator.script(Text(usage=HAIKU_USAGE), Text(usage=HAIKU_USAGE))
            await post_messages(
                running.port, running.key, message_body("claude-haiku-4-5")
            )
            await admin.ok(
                "PUT",
                "/admin/pricing/claude-haiku-4-5",
                {"input": 2.0, "output": 10.0, "cache_read": 0.2, "cache_write": 2.5},
            )
            await post_messages(
                running.port, running.key, message_body("claude-haiku-4-5")
            )
            listing = await admin.ok("GET", "/admin/pricing")
            spent = await admin.ok("GET", "/admin/spend?by=model")

    haiku = _cost(HAIKU_4_5, HAIKU_USAGE)
    entry = next(row for row in listing["models"] if row["model"] == "claude-haiku-4-5")
    assert entry["overridden"] is True and entry["input"] == 2.0
    assert _by(spent, "model") == pytest.approx(
        {"claude-haiku-4-5": haiku + 2 * haiku}, abs=1e-9
    )


async def test_admin_cli_reports_spend_and_manages_budgets_and_limits(
    tmp_path: Any, capsys: Any
) -> None:
    from ccag.cli import main

    with trio.fail_after(30):
        async with open_gateway(tmp_path) as running:
            running.simulator.script(Text(usage=HAIKU_USAGE))
            await post_messages(
                running.port, running.key, message_body("claude-haiku-4-5")
            )
            token = await login(running.port)
            common = ["--url", running.url, "--token", token]
            # Limits and budgets name teams that exist.
            await Caller(running.port, token).ok("POST", "/admin/teams", {"name": "web"}, 201)

            def run(*argv: str) -> tuple[int, str]:
                status = main(["admin", *argv, *common])
                return status, capsys.readouterr().out

            as_json = await trio.to_thread.run_sync(
                run, "spend", "--by", "user", "--json"
            )
            table = await trio.to_thread.run_sync(
                run, "spend", "--by", "model", "--since", "7d"
            )
            created = await trio.to_thread.run_sync(
                run,
                "budgets",
                "create",
                "--scope",
                "user",
                "--name",
                "tester",
                "--period",
                "weekly",
                "--limit-usd",
                "25",
                "--policy",
                "notify",
                "--json",
            )
            limited = await trio.to_thread.run_sync(
                run, "limits", "set", "team", "web", "--rpm", "5", "--json"
            )
            listed = await trio.to_thread.run_sync(run, "limits", "list")

    haiku = _cost(HAIKU_4_5, HAIKU_USAGE)
    assert as_json[0] == 0
    assert json.loads(as_json[1])["rows"][0]["cost_usd"] == pytest.approx(
        haiku, abs=1e-9
    )
    assert (
        table[0] == 0 and "claude-haiku-4-5" in table[1] and f"{haiku:.2f}" in table[1]
    )
    assert json.loads(created[1])["limit_usd"] == 25.0
    assert json.loads(limited[1]) == {
        "scope": "team",
        "name": "web",
        "rpm": 5,
        "tpm": None,
    }
    assert "web" in listed[1] and "(default)" in listed[1]
