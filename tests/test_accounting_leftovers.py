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
from ccag.simulator import open_simulator
from ccag.simulator.scenarios import Text, Usage
from ccag.sse import SSEDecoder
from ccag.store import open_store_sync
from tests.e2e_client import message_body, post_messages, request
from tests.gateway_fixture import open_gateway

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
