"""Web search by interception, end to end: SDK -> gateway -> simulator + fake provider.

The simulator plays a model that calls the search tool once, twice or never
(``[sim:search N]``); the fake provider on loopback answers the searches.
Responses are checked block by block against Anthropic's format, on the raw
wire and through the ``anthropic`` SDK's typed blocks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import h11
import pytest
import trio
from anthropic.types import (
    ServerToolUseBlock,
    TextBlock,
    ToolUseBlock,
    WebSearchResultBlock,
    WebSearchToolResultBlock,
    WebSearchToolResultError,
)

from ccag.simulator import Fail, ToolUse
from ccag.sse import SSEDecoder
from ccag.websearch.tool import decode_snippet
from tests.gateway_fixture import RunningGateway, open_gateway
from tests.websearch_fakes import (
    RESULTS,
    Answer,
    open_search_gateway,
)

T = TypeVar("T")

TEST_TIMEOUT_SECONDS = 30
MODEL = "claude-sonnet-4-5"
SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search"}

_open_clients: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def sdk_hygiene(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    yield
    while _open_clients:
        _open_clients.pop().close()


def sdk(running: RunningGateway) -> anthropic.Anthropic:
    client = anthropic.Anthropic(
        base_url=running.url, api_key=running.key, max_retries=0
    )
    _open_clients.append(client)
    return client


async def in_thread(call: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(call)


def search_body(
    prompt: str, *, stream: bool, tool: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": prompt}],
        "tools": [tool or SEARCH_TOOL],
        "stream": stream,
        **extra,
    }


async def post(running: RunningGateway, body: dict[str, Any]) -> tuple[int, bytes]:
    """POST /v1/messages over a raw socket; status and whole body."""
    payload = json.dumps(body).encode()
    stream = await trio.open_tcp_stream("127.0.0.1", running.port)
    connection = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="POST",
        target="/v1/messages",
        headers=[
            ("host", "127.0.0.1"),
            ("x-api-key", running.key),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
            ("content-length", str(len(payload))),
            ("connection", "close"),
        ],
    )
    await stream.send_all(
        connection.send(request)
        + connection.send(h11.Data(data=payload))
        + connection.send(h11.EndOfMessage())
    )
    status, body_bytes = 0, b""
    async with stream:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body_bytes += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, body_bytes


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    return [(event.event, json.loads(event.data)) for event in SSEDecoder().feed(raw)]


def expected_result(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "web_search_result",
        "url": item["url"],
        "title": item["title"],
        "page_age": item.get("page_age"),
    }


def web_searches_counted(running: RunningGateway) -> int:
    for instrument, series in running.telemetry.snapshot():
        if instrument.name == "ccag.web_searches.total":
            return int(series[0][1])
    raise AssertionError("no ccag.web_searches.total instrument")


# -- streaming ---------------------------------------------------------------


async def test_stream_one_search_blocks_in_order(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (provider, running):
            status, raw = await post(
                running, search_body("trio python [sim:search 1]", stream=True)
            )
            searches_counted = web_searches_counted(running)
            calls = running.simulator.model_requests()

    assert status == 200
    events = sse_events(raw)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names.count("message_start") == 1
    assert (
        names[-2:] == ["message_delta", "message_stop"]
        and names.count("message_stop") == 1
    )

    starts = [data for name, data in events if name == "content_block_start"]
    assert [data["index"] for data in starts] == list(range(len(starts)))
    kinds = [data["content_block"]["type"] for data in starts]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"]

    call = starts[0]["content_block"]
    assert (
        call["id"].startswith("srvtoolu_")
        and call["name"] == "web_search"
        and call["input"] == {}
    )
    query_json = "".join(
        data["delta"]["partial_json"]
        for name, data in events
        if name == "content_block_delta" and data["index"] == 0
    )
    assert json.loads(query_json) == {"query": "trio python"}

    result = starts[1]["content_block"]
    assert result["tool_use_id"] == call["id"]
    assert [
        {key: item[key] for key in ("type", "url", "title", "page_age")}
        for item in result["content"]
    ] == [expected_result(item) for item in RESULTS]
    assert (
        decode_snippet(result["content"][0]["encrypted_content"])
        == RESULTS[0]["snippet"]
    )

    text = "".join(
        data["delta"]["text"]
        for name, data in events
        if name == "content_block_delta" and data["index"] == 2
    )
    assert RESULTS[0]["url"] in text, "the model read the results as its tool result"

    # Every block that starts also stops, in order, before the next starts.
    order = [
        (name, data["index"])
        for name, data in events
        if name.startswith("content_block_") and name != "content_block_delta"
    ]
    assert order == [
        (kind, index)
        for index in range(3)
        for kind in ("content_block_start", "content_block_stop")
    ]

    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["server_tool_use"] == {"web_search_requests": 1}
    assert len(calls) == 2
    assert len(provider.received) == 1
    assert searches_counted == 1


async def test_stream_two_searches_usage_adds_up(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (provider, running):
            status, raw = await post(
                running, search_body("trio python [sim:search 2]", stream=True)
            )
            calls = running.simulator.model_requests()

    assert status == 200
    events = sse_events(raw)
    kinds = [
        data["content_block"]["type"]
        for name, data in events
        if name == "content_block_start"
    ]
    assert kinds == [
        "server_tool_use",
        "web_search_tool_result",
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    starts = [data for name, data in events if name == "content_block_start"]
    assert starts[1]["content_block"]["tool_use_id"] == starts[0]["content_block"]["id"]
    assert starts[3]["content_block"]["tool_use_id"] == starts[2]["content_block"]["id"]
    assert starts[0]["content_block"]["id"] != starts[2]["content_block"]["id"]
    assert len(provider.received) == 2
    assert len(calls) == 3

    # Usage is the sum over the three Bedrock calls the simulator answered.
    delta = events[-2][1]
    start = events[0][1]["message"]["usage"]
    assert delta["usage"]["server_tool_use"] == {"web_search_requests": 2}
    assert delta["usage"]["input_tokens"] > start["input_tokens"]
    assert delta["usage"]["output_tokens"] > 0


async def test_stream_no_search_is_plain_answer(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (provider, running):
            status, raw = await post(
                running, search_body("hello [sim:search 0]", stream=True)
            )
            sent = running.simulator.model_requests()[0].body

    assert status == 200
    events = sse_events(raw)
    kinds = [
        data["content_block"]["type"]
        for name, data in events
        if name == "content_block_start"
    ]
    assert kinds == ["text"]
    assert events[-2][1]["usage"]["server_tool_use"] == {"web_search_requests": 0}
    assert provider.received == []
    # Bedrock saw an ordinary tool, never the server tool.
    assert sent["tools"][0]["name"] == "web_search"
    assert "type" not in sent["tools"][0] and sent["tools"][0]["input_schema"][
        "required"
    ] == ["query"]


# -- non-streaming, through the SDK's types -----------------------------------


async def test_sdk_message_has_typed_search_blocks(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (_provider, running):
            client = sdk(running)
            message = await in_thread(
                lambda: client.messages.create(
                    model=MODEL,
                    max_tokens=1024,
                    messages=[
                        {"role": "user", "content": "trio python [sim:search 1]"}
                    ],
                    tools=[
                        {
                            "type": "web_search_20250305",
                            "name": "web_search",
                            "max_uses": 3,
                        }
                    ],
                )
            )

    assert [type(block) for block in message.content] == [
        ServerToolUseBlock,
        WebSearchToolResultBlock,
        TextBlock,
    ]
    call, result, text = message.content
    assert isinstance(call, ServerToolUseBlock) and call.input == {
        "query": "trio python"
    }
    assert (
        isinstance(result, WebSearchToolResultBlock) and result.tool_use_id == call.id
    )
    assert isinstance(result.content, list)
    assert all(isinstance(item, WebSearchResultBlock) for item in result.content)
    assert [item.url for item in result.content] == [item["url"] for item in RESULTS]
    assert isinstance(text, TextBlock) and RESULTS[1]["url"] in text.text
    assert message.stop_reason == "end_turn"
    assert message.model == MODEL
    assert message.usage.server_tool_use is not None
    assert message.usage.server_tool_use.web_search_requests == 1


async def test_sdk_stream_accumulates_same_message(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (_provider, running):
            client = sdk(running)

            def stream_it() -> Any:
                with client.messages.stream(
                    model=MODEL,
                    max_tokens=1024,
                    messages=[
                        {"role": "user", "content": "trio python [sim:search 2]"}
                    ],
                    tools=[SEARCH_TOOL],
                ) as stream:
                    return stream.get_final_message()

            message = await in_thread(stream_it)

    types = [block.type for block in message.content]
    assert types == [
        "server_tool_use",
        "web_search_tool_result",
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    assert isinstance(message.content[0], ServerToolUseBlock)
    assert message.content[0].input == {"query": "trio python"}
    assert (
        message.usage.server_tool_use is not None
        and message.usage.server_tool_use.web_search_requests == 2
    )


# -- errors -------------------------------------------------------------------


async def test_max_uses_exceeded_is_an_error_block(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (provider, running):
            client = sdk(running)
            message = await in_thread(
                lambda: client.messages.create(
                    model=MODEL,
                    max_tokens=1024,
                    messages=[{"role": "user", "content": "trio [sim:search 2]"}],
                    tools=[
                        {
                            "type": "web_search_20250305",
                            "name": "web_search",
                            "max_uses": 1,
                        }
                    ],
                )
            )
            final_call = running.simulator.model_requests()[-1].body

    results = [
        block
        for block in message.content
        if isinstance(block, WebSearchToolResultBlock)
    ]
    assert isinstance(results[0].content, list)
    assert isinstance(results[1].content, WebSearchToolResultError)
    assert results[1].content.error_code == "max_uses_exceeded"
    assert len(provider.received) == 1
    assert (
        message.usage.server_tool_use is not None
        and message.usage.server_tool_use.web_search_requests == 1
    )
    told = final_call["messages"][-1]["content"][0]
    assert (
        told["type"] == "tool_result"
        and told["is_error"] is True
        and "max_uses_exceeded" in told["content"]
    )


@pytest.mark.parametrize(
    ("answer", "error_code"),
    [
        (Answer(status=500, body=b"oops"), "unavailable"),
        (Answer(status=429, body=b"slow down"), "too_many_requests"),
        (Answer(body=b"not json"), "unavailable"),
        (Answer(delay=3.0), "unavailable"),
    ],
    ids=["http-500", "http-429", "bad-json", "timeout"],
)
async def test_provider_failure_is_an_error_block(
    tmp_path: Path, answer: Answer, error_code: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path, web_search_timeout=0.5) as (
            provider,
            running,
        ):
            provider.answer = answer
            status, raw = await post(
                running, search_body("trio [sim:search 1]", stream=False)
            )

    assert status == 200
    message = json.loads(raw)
    assert [block["type"] for block in message["content"]] == [
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    assert message["content"][1]["content"] == {
        "type": "web_search_tool_result_error",
        "error_code": error_code,
    }
    assert message["usage"]["server_tool_use"] == {"web_search_requests": 0}


async def test_disabled_interception_is_a_400_naming_tool_and_setting(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_gateway(tmp_path, settings={"web_search": False}) as running:
            status, raw = await post(
                running, search_body("trio [sim:search 1]", stream=True)
            )
            calls = running.simulator.model_requests()

    assert status == 400
    error = json.loads(raw)
    assert (
        error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    )
    assert "web_search_20250305" in error["error"]["message"]
    assert "web_search setting" in error["error"]["message"]
    assert calls == []


async def test_owner_mapping_turns_search_off_for_a_user(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(
            tmp_path, web_search_by_owner="user:intern=off"
        ) as (
            _provider,
            running,
        ):
            running.key = await running.new_key("intern")
            status, raw = await post(
                running, search_body("trio [sim:search 1]", stream=False)
            )

    assert status == 400
    assert "web_search_by_owner" in json.loads(raw)["error"]["message"]


async def test_domain_filters_reach_provider_and_are_applied(tmp_path: Path) -> None:
    tool = {
        "type": "web_search_20250305",
        "name": "web_search",
        "blocked_domains": ["blocked.example"],
        "user_location": {"type": "approximate", "country": "US"},
    }
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (provider, running):
            status, raw = await post(
                running, search_body("trio [sim:search 1]", stream=False, tool=tool)
            )

    assert status == 200
    urls = [item["url"] for item in json.loads(raw)["content"][1]["content"]]
    assert urls == [RESULTS[0]["url"], RESULTS[1]["url"]]
    sent = json.loads(provider.received[0][3])
    assert sent["blocked_domains"] == ["blocked.example"]
    assert sent["user_location"]["country"] == "US"


async def test_client_tool_call_ends_the_loop(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (provider, running):
            running.simulator.script(
                ToolUse(name="get_weather", input={"city": "Paris"})
            )
            body = search_body("weather", stream=False)
            body["tools"].append(
                {
                    "name": "get_weather",
                    "description": "weather",
                    "input_schema": {"type": "object"},
                }
            )
            client = sdk(running)
            message = await in_thread(
                lambda: client.messages.create(
                    **{k: v for k, v in body.items() if k != "stream"}
                )
            )
            calls = running.simulator.model_requests()

    assert [type(block) for block in message.content] == [ToolUseBlock]
    assert message.stop_reason == "tool_use"
    assert message.content[0].name == "get_weather"
    assert len(calls) == 1 and provider.received == []


async def test_history_with_search_blocks_is_converted(tmp_path: Path) -> None:
    history = [
        {"role": "user", "content": "find trio"},
        {
            "role": "assistant",
            "content": [
                {
                    "type": "server_tool_use",
                    "id": "srvtoolu_abc",
                    "name": "web_search",
                    "input": {"query": "trio"},
                },
                {
                    "type": "web_search_tool_result",
                    "tool_use_id": "srvtoolu_abc",
                    "content": [
                        {
                            "type": "web_search_result",
                            "url": "https://a.example/",
                            "title": "A",
                            "encrypted_content": "opaque",
                            "page_age": None,
                        }
                    ],
                },
                {
                    "type": "text",
                    "text": "Trio is a library.",
                    "citations": [
                        {
                            "type": "web_search_result_location",
                            "url": "https://a.example/",
                            "title": "A",
                            "encrypted_index": "x",
                            "cited_text": "Trio",
                        }
                    ],
                },
            ],
        },
        {"role": "user", "content": "thanks [sim:search 0]"},
    ]
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (_provider, running):
            body = search_body("x", stream=False)
            body["messages"] = history
            status, _ = await post(running, body)
            del body["tools"]
            status_without_tool, _ = await post(running, body)
            with_tool, without_tool = (
                call.body for call in running.simulator.model_requests()
            )

    assert status == status_without_tool == 200
    assert [message["role"] for message in with_tool["messages"]] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert with_tool["messages"][1]["content"] == [
        {
            "type": "tool_use",
            "id": "srvtoolu_abc",
            "name": "web_search",
            "input": {"query": "trio"},
        }
    ]
    assert with_tool["messages"][2]["content"][0]["type"] == "tool_result"
    assert "https://a.example/" in with_tool["messages"][2]["content"][0]["content"]
    assert with_tool["messages"][3]["content"] == [
        {"type": "text", "text": "Trio is a library."}
    ]
    flat = json.dumps(without_tool)
    assert (
        "server_tool_use" not in flat
        and "web_search_tool_result" not in flat
        and "tool_use" not in flat
    )


async def test_upstream_failure_after_search_ends_stream_with_error(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (_provider, running):
            running.simulator.script(
                ToolUse(name="web_search", input={"query": "trio"}),
                Fail("ThrottlingException"),
            )
            status, raw = await post(running, search_body("trio", stream=True))

    assert status == 200
    events = sse_events(raw)
    assert [name for name, _ in events][-1] == "error"
    assert events[-1][1]["error"]["type"] == "rate_limit_error"
    assert "message_stop" not in [name for name, _ in events]
    kinds = [
        data["content_block"]["type"]
        for name, data in events
        if name == "content_block_start"
    ]
    assert kinds == ["server_tool_use", "web_search_tool_result"]


async def test_every_model_call_is_a_spend_record(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (_provider, running):
            status, raw = await post(
                running, search_body("trio [sim:search 2]", stream=True)
            )
            await trio.sleep(0.05)
            records = list(running.gateway.services.spend.recorder.pending())
            calls = running.simulator.model_requests()

    assert status == 200
    usage = sse_events(raw)[-2][1]["usage"]
    assert len(records) == len(calls) == 3
    assert {record.request_id for record in records} == {records[0].request_id}
    assert sum(record.input_tokens for record in records) == usage["input_tokens"]
    assert sum(record.output_tokens for record in records) == usage["output_tokens"]
    assert [record.tool_names for record in records] == ["web_search", "web_search", ""]


async def test_stream_sends_the_search_call_before_the_search_finishes(
    tmp_path: Path,
) -> None:
    search_delay = 1.0
    with trio.fail_after(TEST_TIMEOUT_SECONDS):
        async with open_search_gateway(tmp_path) as (provider, running):
            provider.answer = Answer(delay=search_delay)
            payload = json.dumps(
                search_body("trio [sim:search 1]", stream=True)
            ).encode()
            stream = await trio.open_tcp_stream("127.0.0.1", running.port)
            head = (
                "POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                f"x-api-key: {running.key}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n"
            )
            arrivals: dict[str, float] = {}
            received = b""
            async with stream:
                await stream.send_all(head.encode() + payload)
                while "message_stop" not in arrivals:
                    chunk = await stream.receive_some(65536)
                    assert chunk, "the stream ended before message_stop"
                    received += chunk
                    for marker in (
                        "server_tool_use",
                        "web_search_tool_result",
                        "message_stop",
                    ):
                        if marker.encode() in received and marker not in arrivals:
                            arrivals[marker] = trio.current_time()

    assert set(arrivals) == {
        "server_tool_use",
        "web_search_tool_result",
        "message_stop",
    }
    assert (
        arrivals["web_search_tool_result"] - arrivals["server_tool_use"]
        >= search_delay * 0.8
    )
