"""Token counts on bedrock-mantle: Anthropic's count_tokens, read as CountTokens'."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import anthropic
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from ccag.anthropic.capabilities import Verdicts
from ccag.anthropic.errors import error_from_response
from ccag.anthropic.estimate import estimate_input_tokens as local_estimate
from ccag.anthropic.translate import translate_count_tokens
from ccag.bedrock import facts
from ccag.bedrock.mantle import mantle_count_body, runtime_count_body
from ccag.simulator import Fail, open_simulator
from ccag.simulator.handler import ReceivedRequest
from ccag.simulator.mantle import MANTLE_COUNT_TOKENS
from ccag.simulator.tokens import estimate_input_tokens as simulator_count
from tests.e2e_client import message_body, post_messages, request
from tests.endpoints_fixture import RunningEndpoints, SimEndpoint, open_endpoints

TIMEOUT_S = 30
SONNET = "claude-sonnet-4-5"
# Runtime CountTokens does not serve it (facts: count_tokens false).
OPUS_47 = "claude-opus-4-7"
COUNT_PATH = "/anthropic/v1/messages/count_tokens"
MAX_RESPONSE_BYTES = 64 * 1024

COUNTED = {
    "model": SONNET,
    "system": "be brief",
    "messages": [{"role": "user", "content": "count these words, please " * 20}],
    "tools": [{"name": "lookup", "description": "find", "input_schema": {"type": "object"}}],
}


def _mantle_counts(running: RunningEndpoints, endpoint_id: str) -> list[ReceivedRequest]:
    return [r for r in running.simulators[endpoint_id].requests if r.kind == MANTLE_COUNT_TOKENS]


def _runtime_counts(running: RunningEndpoints, endpoint_id: str) -> list[ReceivedRequest]:
    return [r for r in running.simulators[endpoint_id].requests if r.kind == "count-tokens"]


async def _count(running: RunningEndpoints, body: dict[str, Any]) -> Any:
    return await post_messages(
        running.port, running.key, json.dumps(body).encode(), target="/v1/messages/count_tokens"
    )


# -- the body and the answer, as pure functions --------------------------------


def _runtime_body(inner: dict[str, Any]) -> bytes:
    encoded = base64.b64encode(json.dumps(inner).encode()).decode()
    return json.dumps({"input": {"invokeModel": {"body": encoded}}}).encode()


def test_mantle_count_body_keeps_what_count_tokens_takes() -> None:
    inner = {
        "anthropic_version": "bedrock-2023-05-31",
        "anthropic_beta": ["interleaved-thinking-2025-05-14"],
        "max_tokens": 1,
        "temperature": 0.5,
        "stop_sequences": ["x"],
        "system": "s",
        "messages": [{"role": "user", "content": "hi"}],
        "tool_choice": {"type": "auto"},
    }
    body, headers = mantle_count_body("us.anthropic.m-v1:0", _runtime_body(inner))
    assert json.loads(body) == {
        "model": "us.anthropic.m-v1:0",
        "system": "s",
        "messages": [{"role": "user", "content": "hi"}],
        "tool_choice": {"type": "auto"},
    }
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert headers["accept"] == "application/json"


@pytest.mark.parametrize("body", [b"", b"{}", b'{"input": {"invokeModel": {"body": "%%"}}}'])
def test_mantle_count_body_refuses_what_is_no_count_tokens_body(body: bytes) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        mantle_count_body("m", body)


def test_runtime_count_body_renames_the_count() -> None:
    assert json.loads(runtime_count_body(b'{"input_tokens": 42}')) == {"inputTokens": 42}
    assert runtime_count_body(b'{"input_tokens": true}') == b'{"input_tokens": true}'


@given(st.binary(max_size=200))
def test_runtime_count_body_any_bytes_come_back_as_bytes(raw: bytes) -> None:
    out = runtime_count_body(raw)
    assert out == raw or json.loads(out).keys() == {"inputTokens"}


# -- through the gateway ----------------------------------------------------------


async def test_count_on_a_mantle_endpoint_is_mantles_count_and_streams_still_work(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, [SimEndpoint("mantle1", api="mantle")]) as running:
            reply = await _count(running, COUNTED)
            streamed = await post_messages(running.port, running.key, message_body(SONNET, stream=True))
            counts = _mantle_counts(running, "mantle1")
            runtime = _runtime_counts(running, "mantle1")
            kinds = [r.kind for r in running.simulators["mantle1"].model_requests()]

    assert reply.status == 200, reply.body
    assert [(r.path, r.status) for r in counts] == [(COUNT_PATH, 200)]
    assert runtime == []
    sent = counts[0].body
    assert reply.json() == {"input_tokens": simulator_count(sent)}
    assert sent["model"].endswith("anthropic.claude-sonnet-4-5-20250929-v1:0")
    assert sent["messages"] == COUNTED["messages"] and "max_tokens" not in sent
    assert "bedrock-mantle" in counts[0].headers.get("authorization")
    assert counts[0].headers.get("anthropic-version") == "2023-06-01"

    assert streamed.status == 200
    events = streamed.events()
    assert events[0].event == "message_start" and events[-1].event == "message_stop"
    assert kinds == [MANTLE_COUNT_TOKENS, "mantle"]


async def test_the_sdk_counts_through_a_mantle_endpoint(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, [SimEndpoint("mantle1", api="mantle")]) as running:
            client = anthropic.Anthropic(
                base_url=f"http://127.0.0.1:{running.port}", api_key=running.key, max_retries=0
            )
            try:
                counted = await trio.to_thread.run_sync(
                    lambda: client.messages.count_tokens(
                        model=SONNET, system="be brief", messages=COUNTED["messages"]
                    )
                )
            finally:
                client.close()
            counts = _mantle_counts(running, "mantle1")

    assert len(counts) == 1 and counts[0].status == 200
    assert counted.input_tokens == simulator_count(counts[0].body)


@pytest.mark.parametrize(
    ("failure", "status", "error_type"),
    [
        ("ThrottlingException", 429, "rate_limit_error"),
        ("ValidationException", 400, "invalid_request_error"),
        # Mantle's 503 is Anthropic's 529, as for messages (error_status_fallback).
        ("ServiceUnavailableException", 529, "overloaded_error"),
    ],
)
async def test_a_mantle_count_error_reads_as_anthropics_and_the_client_gets_an_estimate(
    tmp_path: Path, failure: str, status: int, error_type: str
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, [SimEndpoint("mantle1", api="mantle")]) as running:
            simulator = running.simulators["mantle1"]
            simulator.script(Fail(failure), Fail(failure), kind="count-tokens")
            router = running.router
            model = router.catalog.resolve(SONNET, router.geo_prefix)
            body = translate_count_tokens(COUNTED, None, model, Verdicts())
            async with router.count_tokens(model, body) as response:
                error = error_from_response(
                    response.status, response.headers, await response.read_all(MAX_RESPONSE_BYTES)
                )
            reply = await _count(running, COUNTED)
            counts = _mantle_counts(running, "mantle1")

    # What the endpoint answered is the Anthropic error it stands for...
    assert (error.status, error.error_type) == (status, error_type)
    assert error.message and "{" not in error.message
    # ...and the count route, as for CountTokens, answers a local estimate.
    assert [(r.path, r.error) for r in counts] == [(COUNT_PATH, failure)] * 2
    assert reply.status == 200 and reply.json() == {"input_tokens": local_estimate(COUNTED)}


async def test_models_runtime_cannot_count_are_counted_on_mantle(tmp_path: Path) -> None:
    assert not facts.shipped_models()[OPUS_47].count_tokens
    endpoints = [
        SimEndpoint("invoke1", "us-east-1", priority=1),
        SimEndpoint("mantle1", "us-east-2", api="mantle", priority=2),
    ]
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, endpoints) as running:
            sonnet = await _count(running, COUNTED)
            opus = await _count(running, {**COUNTED, "model": OPUS_47})
            runtime = _runtime_counts(running, "invoke1")
            mantle = _mantle_counts(running, "mantle1")

    assert sonnet.status == 200 and opus.status == 200
    assert [(r.model_id, r.status) for r in runtime] == [("anthropic.claude-sonnet-4-5-20250929-v1:0", 200)]
    assert [r.status for r in mantle] == [200]
    assert mantle[0].body["model"].endswith("anthropic.claude-opus-4-7")
    assert opus.json() == {"input_tokens": simulator_count(mantle[0].body)}


async def test_a_preferred_mantle_endpoint_counts_before_an_invoke_one(tmp_path: Path) -> None:
    endpoints = [
        SimEndpoint("mantle1", "us-east-1", api="mantle", priority=1),
        SimEndpoint("invoke1", "us-east-2", priority=2),
    ]
    with trio.fail_after(TIMEOUT_S):
        async with open_endpoints(tmp_path, endpoints) as running:
            reply = await _count(running, COUNTED)
            calls = running.calls()

    assert reply.status == 200
    assert calls == {"mantle1": 1, "invoke1": 0}


# -- the simulator's route --------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "status"), [({}, 200), ({"max_tokens": 5}, 400), ({"stream": True}, 400)]
)
async def test_the_simulator_takes_only_count_tokens_fields(extra: dict[str, Any], status: int) -> None:
    body = {"model": "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "messages": COUNTED["messages"], **extra}
    headers = [
        ("authorization", "Bearer sim-key"),
        ("anthropic-version", "2023-06-01"),
        ("content-type", "application/json"),
    ]
    with trio.fail_after(TIMEOUT_S):
        async with open_simulator(api_keys=frozenset({"sim-key"})) as simulator:
            reply = await request(
                simulator.port, "POST", COUNT_PATH, headers=headers, body=json.dumps(body).encode()
            )

    assert reply.status == status, reply.body
    if status == 200:
        assert reply.json() == {"input_tokens": simulator_count(body)}
    else:
        document = reply.json()
        assert document["type"] == "error" and document["error"]["type"] == "invalid_request_error"
        assert next(iter(extra)) in document["error"]["message"]
