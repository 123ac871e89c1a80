"""The pure parts of web search: tool detection, request rewriting, merging."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ccag.config import load_config
from ccag.errors import ApiError, ConfigError
from ccag.websearch.assemble import MessageAssembler
from ccag.websearch.merge import ResponseMerger
from ccag.websearch.settings import search_settings
from ccag.websearch.tool import (
    decode_snippet,
    encode_snippet,
    find_search_tool,
    relax_tool_choice,
    rewrite_request,
    server_tool_id,
)


def body_with(*tools: Any, **extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": list(tools),
        **extra,
    }


# -- detection -------------------------------------------------------------------


@pytest.mark.parametrize(
    "version", ["web_search_20250305", "web_search_20260209", "web_search_20260318"]
)
def test_find_search_tool_any_version(version: str) -> None:
    spec = find_search_tool(
        body_with(
            {
                "type": version,
                "name": "web_search",
                "max_uses": 3,
                "allowed_domains": ["A.example"],
            }
        )
    )
    assert spec is not None
    assert (spec.tool_type, spec.max_uses, spec.allowed_domains) == (
        version,
        3,
        ("a.example",),
    )


def test_find_search_tool_none_for_client_tools() -> None:
    assert (
        find_search_tool(
            body_with({"name": "web_search", "input_schema": {"type": "object"}})
        )
        is None
    )
    assert find_search_tool({"messages": []}) is None


@pytest.mark.parametrize(
    "tool",
    [
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "allowed_domains": ["a"],
            "blocked_domains": ["b"],
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 0},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": True},
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "allowed_domains": "a.example",
        },
        {
            "type": "web_search_20250305",
            "name": "web_search",
            "user_location": {"country": 5},
        },
    ],
)
def test_find_search_tool_refuses_malformed_fields(tool: dict[str, Any]) -> None:
    with pytest.raises(ApiError) as caught:
        find_search_tool(body_with(tool))
    assert caught.value.status == 400


# -- rewriting -------------------------------------------------------------------


def test_rewrite_replaces_only_the_server_tool() -> None:
    client_tool = {
        "name": "Bash",
        "description": "run",
        "input_schema": {"type": "object"},
    }
    server_tool = {
        "type": "web_search_20250305",
        "name": "web_search",
        "cache_control": {"type": "ephemeral"},
    }
    body = body_with(
        client_tool, server_tool, tool_choice={"type": "tool", "name": "web_search"}
    )
    out = rewrite_request(body, find_search_tool(body))
    assert out["tools"][0] is client_tool
    assert set(out["tools"][1]) == {
        "name",
        "description",
        "input_schema",
        "cache_control",
    }
    assert out["tools"][1]["name"] == "web_search"
    assert out["tool_choice"] == {"type": "tool", "name": "web_search"}
    assert body["tools"][1] is server_tool, "the client's body is not changed"


def test_relax_tool_choice() -> None:
    assert relax_tool_choice({"tool_choice": {"type": "tool", "name": "web_search"}})[
        "tool_choice"
    ] == {"type": "auto"}
    assert relax_tool_choice(
        {"tool_choice": {"type": "any", "disable_parallel_tool_use": True}}
    )["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    body = {"tool_choice": {"type": "auto"}}
    assert relax_tool_choice(body) is body


def test_history_result_at_end_of_turn_joins_the_next_user_turn() -> None:
    messages = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Searching."},
                {
                    "type": "server_tool_use",
                    "id": "srvtoolu_1",
                    "name": "web_search",
                    "input": {"query": "x"},
                },
                {
                    "type": "web_search_tool_result",
                    "tool_use_id": "srvtoolu_1",
                    "content": {
                        "type": "web_search_tool_result_error",
                        "error_code": "unavailable",
                    },
                },
            ],
        },
        {"role": "user", "content": "go on"},
    ]
    body = body_with({"type": "web_search_20250305", "name": "web_search"})
    body["messages"] = messages
    out = rewrite_request(body, find_search_tool(body))["messages"]
    assert [message["role"] for message in out] == ["user", "assistant", "user"]
    assert out[1]["content"][1] == {
        "type": "tool_use",
        "id": "srvtoolu_1",
        "name": "web_search",
        "input": {"query": "x"},
    }
    result, text = out[2]["content"]
    assert (
        result["type"] == "tool_result"
        and result["is_error"] is True
        and "unavailable" in result["content"]
    )
    assert text == {"type": "text", "text": "go on"}


def test_snippet_round_trip_and_foreign_content() -> None:
    assert decode_snippet(encode_snippet("héllo")) == "héllo"
    assert decode_snippet("EqQBCkYIBxgCKkBz") is None
    assert decode_snippet("ccag1.!!!") is None


def test_server_tool_id() -> None:
    assert server_tool_id("toolu_bdrk_abc") == "srvtoolu_abc"
    assert server_tool_id("toolu_01X") == "srvtoolu_01X"


# -- merging and assembling ----------------------------------------------------------


def call_events(
    message_id: str, blocks: list[dict[str, Any]], stop: str, usage: dict[str, int]
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "stop_reason": None,
                "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1},
            },
        }
    ]
    for index, block in enumerate(blocks):
        if block["type"] == "text":
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "text", "text": ""},
                }
            )
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": block["text"]},
                }
            )
        else:
            events.append(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {**block, "input": {}},
                }
            )
            events.append(
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {
                        "type": "input_json_delta",
                        "partial_json": json.dumps(block["input"]),
                    },
                }
            )
        events.append({"type": "content_block_stop", "index": index})
    events.append(
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop},
            "usage": {"output_tokens": usage["output_tokens"]},
        }
    )
    events.append({"type": "message_stop"})
    return events


def test_merger_renumbers_blocks_and_sums_usage() -> None:
    merger = ResponseMerger("web_search")
    out: list[dict[str, Any]] = []

    merger.begin_call()
    first = [
        {"type": "text", "text": "Let me look."},
        {
            "type": "tool_use",
            "id": "toolu_A",
            "name": "web_search",
            "input": {"query": "q"},
        },
    ]
    for event in call_events(
        "msg_1", first, "tool_use", {"input_tokens": 10, "output_tokens": 5}
    ):
        out += merger.feed(event)
    summary = merger.end_call()
    assert [call.server_id for call in summary.searches] == ["srvtoolu_A"]
    merger.searches_run += 1
    out += merger.result_events(summary.searches[0], [])

    merger.begin_call()
    for event in call_events(
        "msg_2",
        [{"type": "text", "text": "Done."}],
        "end_turn",
        {"input_tokens": 30, "output_tokens": 7},
    ):
        out += merger.feed(event)
    merger.end_call()
    out += merger.finish("end_turn")

    assert [event["type"] for event in out].count("message_start") == 1
    assert out[0]["message"]["id"] == "msg_1"
    assembled = MessageAssembler()
    for event in out:
        assembled.apply(event)
    message = assembled.message
    assert message is not None
    assert [block["type"] for block in message["content"]] == [
        "text",
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    assert message["content"][1] == {
        "type": "server_tool_use",
        "id": "srvtoolu_A",
        "name": "web_search",
        "input": {"query": "q"},
    }
    assert message["content"][2]["tool_use_id"] == "srvtoolu_A"
    assert (
        message["usage"]["input_tokens"] == 40
        and message["usage"]["output_tokens"] == 12
    )
    assert message["usage"]["server_tool_use"] == {"web_search_requests": 1}
    assert message["stop_reason"] == "end_turn"


@given(
    text=st.text(max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_assembler_joins_tool_input_split_anywhere(text: str, cuts: list[int]) -> None:
    encoded = json.dumps({"query": text})
    points = sorted({min(cut, len(encoded)) for cut in cuts} | {0, len(encoded)})
    assembler = MessageAssembler()
    assembler.apply({"type": "message_start", "message": {"id": "m", "content": []}})
    block = {"type": "tool_use", "id": "t", "name": "n", "input": {}}
    assembler.apply({"type": "content_block_start", "index": 0, "content_block": block})
    for start, end in itertools.pairwise(points):
        delta = {"type": "input_json_delta", "partial_json": encoded[start:end]}
        assembler.apply({"type": "content_block_delta", "index": 0, "delta": delta})
    assembler.apply({"type": "content_block_stop", "index": 0})
    assert assembler.blocks[0]["input"] == {"query": text}


# -- settings -------------------------------------------------------------------------


def test_settings_owner_mapping() -> None:
    config = load_config(
        {
            "web_search_by_owner": "team:research=tavily, user:intern=off, team:lab=searxng@http://127.0.0.1:9",
            "web_search_api_keys": "tavily=tvly-1",
        },
        environ={},
    )
    settings = search_settings(config)
    assert settings.choice_for("alice", "research").name == "tavily"
    assert settings.choice_for("alice", "research").api_key == "tvly-1"
    assert settings.choice_for("intern", "research") is None
    assert settings.choice_for("bob", "lab").url == "http://127.0.0.1:9"
    assert settings.choice_for("bob", None).name == "duckduckgo"


@pytest.mark.parametrize(
    "flags",
    [
        {"web_search_provider": "bing"},
        {"web_search_provider": "tavily"},
        {"web_search_provider": "searxng"},
        {"web_search_by_owner": "group:x=tavily"},
        {"web_search_by_owner": "team:x"},
    ],
)
def test_settings_refuse_incomplete_configuration(flags: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        search_settings(load_config(flags, environ={}))
