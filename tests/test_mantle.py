"""Endpoints of the mantle kind: the Anthropic Messages API on bedrock-mantle."""

from __future__ import annotations

import json

import trio
from hypothesis import given
from hypothesis import strategies as st

from ccag.anthropic.observe import ResponseObserver
from ccag.anthropic.translate import BedrockRequest
from ccag.bedrock.mantle import MantleStreamTranslator, mantle_body
from ccag.simulator import Fail, Text, Usage
from tests.e2e_client import flat_snapshot, message_body, post_messages, series
from tests.endpoints_fixture import SimEndpoint, open_endpoints

TIMEOUT_S = 30
SONNET = "claude-sonnet-4-5"

STREAM = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","type":"message",'
    b'"role":"assistant","model":"us.anthropic.x","content":[],"usage":{"input_tokens":7,"output_tokens":1}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":5}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


def test_mantle_body_moves_version_and_betas_to_headers() -> None:
    invoke = {"anthropic_version": "bedrock-2023-05-31", "anthropic_beta": ["a", "b"], "max_tokens": 5, "messages": []}
    request = BedrockRequest(json.dumps(invoke).encode(), True, "us.anthropic.m-v1:0", ("a", "b"), (), ())
    body, headers = mantle_body(request)
    sent = json.loads(body)
    assert sent == {"model": "us.anthropic.m-v1:0", "max_tokens": 5, "messages": [], "stream": True}
    assert headers["anthropic-version"] == "2023-06-01" and headers["anthropic-beta"] == "a,b"


@given(st.integers(min_value=1, max_value=len(STREAM)))
def test_mantle_stream_split_anywhere_gives_the_same_events(cut: int) -> None:
    observer = ResponseObserver()
    translator = MantleStreamTranslator("claude-x", observer)
    first = translator.feed(STREAM[:cut])
    second = translator.feed(STREAM[cut:])
    out = first.sse + second.sse
    assert (first.finished or second.finished) and translator.close() is None
    assert b'"model":"claude-x"' in out and b"us.anthropic.x" not in out
    assert out.count(b"event: ") == 6
    assert (observer.usage.input_tokens, observer.usage.output_tokens) == (7, 5)


@given(st.binary(max_size=200))
def test_mantle_stream_any_bytes_end_in_an_error_or_nothing(data: bytes) -> None:
    translator = MantleStreamTranslator("claude-x", ResponseObserver())
    chunk = translator.feed(data)
    assert chunk.error is None or chunk.finished
    assert translator.close() is None or not chunk.finished


async def test_mantle_endpoint_streams_and_answers_with_usage_counted(tmp_path) -> None:
    endpoint = SimEndpoint("mantle1", "us-east-1", api="mantle")
    usage = Usage(input_tokens=11, output_tokens=4)
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, [endpoint]) as running:
            simulator = running.simulators["mantle1"]
            simulator.script(Text("one two", usage=usage), Text("one two", usage=usage))
            streamed = await post_messages(running.port, running.key, message_body(SONNET, stream=True))
            plain = await post_messages(running.port, running.key, message_body(SONNET))
            received = simulator.model_requests()
            snapshot = flat_snapshot(running.telemetry)

    assert streamed.status == 200 and plain.status == 200
    events = streamed.events()
    assert events[0].event == "message_start" and events[-1].event == "message_stop"
    assert json.loads(events[0].data)["message"]["model"] == SONNET
    assert plain.json()["model"] == SONNET and plain.json()["content"][0]["text"] == "one two"
    assert [r.kind for r in received] == ["mantle", "mantle"]
    assert received[0].headers.get("anthropic-version") == "2023-06-01"
    assert "bedrock-mantle" in received[0].headers.get("authorization")
    assert snapshot[series("ccag.tokens.input", model=SONNET)] == 22
    assert snapshot[series("ccag.tokens.output", model=SONNET)] == 8


async def test_failover_from_invoke_to_mantle(tmp_path) -> None:
    endpoints = [
        SimEndpoint("invoke1", "us-east-1", priority=1),
        SimEndpoint("mantle1", "us-east-2", api="mantle", priority=2),
    ]
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, endpoints) as running:
            running.simulators["invoke1"].script(Fail("ThrottlingException"))
            streamed = await post_messages(running.port, running.key, message_body(SONNET, stream=True))
            calls = running.calls()

    assert streamed.status == 200 and b"event: message_stop" in streamed.body
    assert calls == {"invoke1": 1, "mantle1": 1}


async def test_mantle_throttle_is_a_429_and_fails_over_back(tmp_path) -> None:
    endpoints = [
        SimEndpoint("mantle1", "us-east-1", api="mantle", priority=1),
        SimEndpoint("invoke1", "us-east-2", priority=2),
    ]
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, endpoints) as running:
            running.simulators["mantle1"].script(Fail("ThrottlingException"))
            reply = await post_messages(running.port, running.key, message_body(SONNET))
            calls = running.calls()
            snapshot = flat_snapshot(running.telemetry)

    assert reply.status == 200
    assert calls == {"mantle1": 1, "invoke1": 1}
    assert snapshot[series("ccag.bedrock.throttles.total", model=SONNET, endpoint_id="mantle1")] == 1
