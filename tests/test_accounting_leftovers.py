"""Accounting the gateway used to get slightly wrong: 1-hour cache writes of a
request mixing TTLs (the simulator's split and its price through the gateway),
the cache-write breakdown of a web search answered in several model calls,
and the live view's "no team" spend of the whole day."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from ccag.bedrock.facts import shipped_models
from ccag.liveview.events import LiveEvent, Visibility
from ccag.liveview.hub import SECONDS_PER_DAY, LiveHub
from ccag.liveview.spend import SpendView
from ccag.simulator import open_simulator
from ccag.simulator.scenarios import Text, ToolUse, Usage
from ccag.simulator.tokens import five_minute_tail_tokens, split_cache_writes
from ccag.sse import SSEDecoder
from ccag.store import open_store_sync
from ccag.websearch.merge import ResponseMerger
from tests.e2e_client import message_body, post_messages, request
from tests.gateway_fixture import open_gateway
from tests.websearch_fakes import open_search_gateway

TIMEOUT = 10
PROFILE = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
MODEL = "claude-sonnet-4-5"
RATES = shipped_models()[MODEL].pricing

# Long enough that the JSON around each text is a small part of its size: the
# simulator estimates about four characters per token.
PREFIX_CHARS = 8000
TAIL_CHARS = 2000
TAIL_TOKENS = TAIL_CHARS // 4
JSON_SLACK_TOKENS = 30


def _breakpoint(ttl: str | None) -> dict[str, Any]:
    control: dict[str, Any] = {"type": "ephemeral"}
    if ttl is not None:
        control["ttl"] = ttl
    return control


def _prompt(prefix_ttl: str | None, tail_ttl: str | None) -> dict[str, Any]:
    """A long cached system prompt, then a cached user turn of TAIL_CHARS."""
    return {
        "system": [
            {
                "type": "text",
                "text": "s" * PREFIX_CHARS,
                "cache_control": _breakpoint(prefix_ttl),
            }
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "text",
                        "text": "t" * TAIL_CHARS,
                        "cache_control": _breakpoint(tail_ttl),
                    }
                ],
            }
        ],
    }


# -- the simulator's usage ----------------------------------------------------


async def _simulated_usage(body: dict[str, Any], written: int) -> dict[str, Any]:
    """The usage the simulator's InvokeModel answers ``body`` with."""
    async with open_simulator(verify_signatures=False) as sim:
        script = [{"type": "text", "usage": {"cache_creation_input_tokens": written}}]
        queued = await request(
            sim.port, "POST", "/_sim/script", body=json.dumps(script).encode()
        )
        assert queued.status == 200
        document = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, **body}
        reply = await request(
            sim.port,
            "POST",
            f"/model/{PROFILE}/invoke",
            body=json.dumps(document).encode(),
        )
    assert reply.status == 200, reply.body
    usage: dict[str, Any] = reply.json()["usage"]
    return usage


@pytest.mark.parametrize(
    ("prefix_ttl", "tail_ttl", "expected"),
    [
        (
            "1h",
            "1h",
            {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 5000},
        ),
        (
            "5m",
            "5m",
            {"ephemeral_5m_input_tokens": 5000, "ephemeral_1h_input_tokens": 0},
        ),
        (
            None,
            None,
            {"ephemeral_5m_input_tokens": 5000, "ephemeral_1h_input_tokens": 0},
        ),
    ],
)
async def test_simulator_reports_a_single_ttl_whole(
    prefix_ttl: str | None, tail_ttl: str | None, expected: dict[str, int]
) -> None:
    with trio.fail_after(TIMEOUT):
        usage = await _simulated_usage(_prompt(prefix_ttl, tail_ttl), 5000)

    assert usage["cache_creation_input_tokens"] == 5000
    assert usage["cache_creation"] == expected


@pytest.mark.parametrize("tail_ttl", ["5m", None])
async def test_simulator_splits_a_mixed_request_at_its_last_1h_breakpoint(
    tail_ttl: str | None,
) -> None:
    with trio.fail_after(TIMEOUT):
        usage = await _simulated_usage(_prompt("1h", tail_ttl), 5000)

    split = usage["cache_creation"]
    assert usage["cache_creation_input_tokens"] == 5000
    assert (
        split["ephemeral_5m_input_tokens"] + split["ephemeral_1h_input_tokens"] == 5000
    )
    # The user turn after the 1-hour system prompt is the 5-minute part.
    assert (
        TAIL_TOKENS
        <= split["ephemeral_5m_input_tokens"]
        <= TAIL_TOKENS + JSON_SLACK_TOKENS
    )


async def test_simulator_writes_after_a_read_1h_prefix_are_all_5m() -> None:
    # Fewer writes than the 5-minute segment holds: the 1-hour prefix was a
    # cache hit, so nothing was written for an hour.
    with trio.fail_after(TIMEOUT):
        usage = await _simulated_usage(_prompt("1h", "5m"), 100)

    assert usage["cache_creation"] == {
        "ephemeral_5m_input_tokens": 100,
        "ephemeral_1h_input_tokens": 0,
    }


async def test_simulator_counts_tool_result_content_before_its_breakpoint() -> None:
    # The 1-hour breakpoint inside the tool result comes before the tool
    # result's own 5-minute one, so only the tool result's shell is 5-minute.
    body = {
        "messages": [
            {"role": "user", "content": "run it"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [
                            {
                                "type": "text",
                                "text": "o" * TAIL_CHARS,
                                "cache_control": _breakpoint("1h"),
                            }
                        ],
                        "cache_control": _breakpoint("5m"),
                    }
                ],
            },
        ]
    }
    with trio.fail_after(TIMEOUT):
        usage = await _simulated_usage(body, 5000)

    split = usage["cache_creation"]
    assert 0 < split["ephemeral_5m_input_tokens"] < JSON_SLACK_TOKENS
    assert (
        split["ephemeral_1h_input_tokens"] == 5000 - split["ephemeral_5m_input_tokens"]
    )


# -- priced through the gateway -----------------------------------------------


def _message_start_usage(body: bytes) -> dict[str, Any]:
    for event in SSEDecoder().feed(body):
        if event.event == "message_start":
            usage: dict[str, Any] = json.loads(event.data)["message"]["usage"]
            return usage
    raise AssertionError("no message_start")


async def test_spend_prices_a_mixed_request_by_its_split(tmp_path: Any) -> None:
    written = 5000
    scripted = Usage(
        input_tokens=100, output_tokens=200, cache_creation_input_tokens=written
    )
    prompt = _prompt("1h", "5m")
    store_path = str(tmp_path / "ccag.sqlite3")
    with trio.fail_after(30):
        async with open_gateway(tmp_path, settings={"store": store_path}) as running:
            running.simulator.script(Text(usage=scripted), Text(usage=scripted))
            streamed = await post_messages(
                running.port, running.key, message_body(MODEL, stream=True, **prompt)
            )
            whole = await post_messages(
                running.port, running.key, message_body(MODEL, stream=False, **prompt)
            )

    assert (streamed.status, whole.status) == (200, 200)
    split = _message_start_usage(streamed.body)["cache_creation"]
    assert whole.json()["usage"]["cache_creation"] == split
    five_minutes = split["ephemeral_5m_input_tokens"]
    assert TAIL_TOKENS <= five_minutes <= TAIL_TOKENS + JSON_SLACK_TOKENS
    assert split["ephemeral_1h_input_tokens"] == written - five_minutes

    with open_store_sync(store_path) as store:
        rows = store.call(
            lambda c: c.query("SELECT cache_write_tokens, cost_usd FROM spend_records"),
            readonly=True,
        )
    by_hand = (
        100 * RATES.input
        + 200 * RATES.output
        + five_minutes * RATES.cache_write_5m
        + (written - five_minutes) * RATES.cache_write_1h
    ) / 1e6
    assert [row[0] for row in rows] == [written, written]
    assert [row[1] for row in rows] == pytest.approx([by_hand, by_hand], rel=1e-9)


# -- web search answered in several model calls -------------------------------

SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search"}
CALL_WRITES = (3000, 200)


def _search_answers() -> tuple[ToolUse, Text]:
    """A search call, then the answer, each writing to the cache."""
    return (
        ToolUse(
            name="web_search",
            input={"query": "trio"},
            usage=Usage(cache_creation_input_tokens=CALL_WRITES[0]),
        ),
        Text(usage=Usage(cache_creation_input_tokens=CALL_WRITES[1])),
    )


def _summed_split(bodies: list[Any]) -> dict[str, int]:
    """What the simulator reported per call, added up."""
    assert len(bodies) == len(CALL_WRITES)
    totals = {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}
    for body, written in zip(bodies, CALL_WRITES, strict=True):
        five_minutes, one_hour = split_cache_writes(
            written, five_minute_tail_tokens(body)
        )
        totals["ephemeral_5m_input_tokens"] += five_minutes
        totals["ephemeral_1h_input_tokens"] += one_hour
    return totals


@pytest.mark.parametrize("stream", [True, False])
async def test_web_search_usage_sums_the_cache_write_breakdown(
    tmp_path: Any, stream: bool
) -> None:
    body = message_body(
        MODEL, stream=stream, tools=[SEARCH_TOOL], **_prompt("1h", "5m")
    )
    with trio.fail_after(30):
        async with open_search_gateway(tmp_path) as (provider, running):
            running.simulator.script(*_search_answers())
            reply = await post_messages(running.port, running.key, body)
            bodies = [call.body for call in running.simulator.model_requests()]

    assert reply.status == 200, reply.body
    assert len(provider.received) == 1
    if stream:
        events = reply.events()
        assert events[-1].event == "message_stop"
        usage = json.loads(events[-2].data)["usage"]
    else:
        usage = reply.json()["usage"]
    expected = _summed_split(bodies)
    assert usage["cache_creation"] == expected
    assert usage["cache_creation_input_tokens"] == sum(CALL_WRITES)
    # Both TTLs took part, so a first-call-only breakdown would differ.
    assert expected["ephemeral_1h_input_tokens"] < sum(CALL_WRITES)
    assert expected["ephemeral_5m_input_tokens"] > CALL_WRITES[1]


def _merged_usage(*call_usages: dict[str, Any]) -> dict[str, Any]:
    """The closing usage of a response made of calls reporting these usages."""
    merger = ResponseMerger("web_search")
    for usage in call_usages:
        merger.begin_call()
        start = {"id": "msg_1", "role": "assistant", "content": [], "usage": usage}
        merger.feed({"type": "message_start", "message": start})
        merger.end_call()
    closing: dict[str, Any] = merger.finish("end_turn")[0]["usage"]
    return closing


def test_merged_usage_counts_a_call_without_breakdown_as_5m() -> None:
    broken_down = {
        "cache_creation_input_tokens": 50,
        "cache_creation": {
            "ephemeral_5m_input_tokens": 10,
            "ephemeral_1h_input_tokens": 40,
        },
    }
    plain = {"cache_creation_input_tokens": 7}

    usage = _merged_usage(plain, broken_down, plain)

    assert usage["cache_creation_input_tokens"] == 64
    assert usage["cache_creation"] == {
        "ephemeral_5m_input_tokens": 24,
        "ephemeral_1h_input_tokens": 40,
    }


def test_merged_usage_has_no_breakdown_when_no_call_had_one() -> None:
    usage = _merged_usage({"cache_creation_input_tokens": 7}, {"input_tokens": 3})
    assert usage["cache_creation_input_tokens"] == 7
    assert "cache_creation" not in usage


# -- the live view's "no team" row without a spend system ---------------------

RING_SIZE = 3
TEAMLESS_REQUESTS = 10


def _live_event(seq: int, at: float, team: str | None, cost: float) -> LiveEvent:
    return LiveEvent(
        seq=seq, at=at, request_id=f"req_{seq}", key_id="k1", key_name="ann-key",
        user="ann", team=team, model=MODEL, requested_model=None,
        endpoint="messages", endpoint_id="default", streaming=True, status=200,
        error_type=None, ttft_ms=100.0, duration_ms=200.0, input_tokens=10,
        output_tokens=20, cache_read_tokens=0, cache_write_tokens=0, tool_calls=0,
        cost_usd=cost,
    )  # fmt: skip


async def test_no_team_row_counts_every_teamless_request_of_the_day() -> None:
    today = 20_000 * SECONDS_PER_DAY
    now = [today + 3600.0]
    hub = LiveHub(lambda *_: 0.0, clock=lambda: now[0], ring_size=RING_SIZE)
    costs = [0.001 * (seq + 1) for seq in range(TEAMLESS_REQUESTS)]

    # Yesterday's request is not today's spend.
    hub.add(_live_event(1, today - 60.0, None, 5.0), today - 60.0)
    for seq, cost in enumerate(costs, start=2):
        hub.add(_live_event(seq, now[0], None, cost), now[0])
        now[0] += 1.0
    hub.add(_live_event(99, now[0], "red", 0.5), now[0])
    assert len(hub.ring) == RING_SIZE < TEAMLESS_REQUESTS

    report = await SpendView(hub, None, clock=lambda: now[0]).report(
        Visibility(is_admin=True)
    )

    rows = {row["name"]: row for row in report["rows"] if row["kind"] == "team"}
    assert rows[None]["requests"] == TEAMLESS_REQUESTS
    assert rows[None]["cost_usd"] == pytest.approx(sum(costs), abs=1e-6)
    assert rows["red"]["requests"] == 1
    assert report["total_usd"] == pytest.approx(sum(costs) + 0.5, abs=1e-6)


def test_hub_forgets_teamless_totals_of_old_days() -> None:
    today = 20_000 * SECONDS_PER_DAY
    hub = LiveHub(lambda *_: 0.0, clock=lambda: float(today))
    for seq, day in enumerate((-5, -1, 0), start=1):
        at = today + day * SECONDS_PER_DAY + 10.0
        hub.add(_live_event(seq, at, None, 0.01), at)
    assert sorted(hub.teamless_day_totals) == [20_000 - 1, 20_000]
